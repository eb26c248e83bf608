"""Serving: the MLflow pyfunc model (:mod:`.pyfunc`, logged from code) and its registration and loading
(:mod:`.registry`). Imports the model layer and the cohort scorer; training never imports it."""
