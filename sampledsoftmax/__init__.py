"""sampledsoftmax."""
