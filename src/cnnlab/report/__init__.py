"""Reports and figures of run directories."""
