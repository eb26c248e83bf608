"""External validation helpers: the training cohort's feature summary, drift between cohorts, and the
self-contained validation report page. Pure functions (no file I/O, no MLflow); the ``validate`` stage
reads the inputs, calls them and writes the outputs."""
