"""Analysis of window activations: contrasts, RSA, unit selection, cross-validated readouts."""
