"""Using a trained run: predicting on new inputs, and exporting the net for serving."""
