"""Studies: one figure or table of the paper, from its grids through the hyper-parameter
selection and the seeds to its report (`python -m blf.study <name>`)."""
