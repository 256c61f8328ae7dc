"""A history checker for pgactors: record concurrent operations, inject faults, check
the versioned registers and the change feed (see ``runner.run_history``)."""
