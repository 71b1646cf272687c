"""Training: the tasks the entry points run (`train`, `evaluate`, `load_run`), the Trainer's
callbacks and loggers, what the console shows, and the speed applied from outside the model."""
