"""Great Expectations suites and the runner that splits rows into pass and quarantine."""
