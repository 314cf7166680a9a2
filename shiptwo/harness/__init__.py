"""The harness wing: spec, pytest binding, results, scoring, report and release gate. Imports nothing of the model wing."""
