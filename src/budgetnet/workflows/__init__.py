"""Work over many runs: experiment grids, reports comparing run directories, the design search."""
