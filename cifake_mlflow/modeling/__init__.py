"""Stage 2, modeling: the MobileNetV2 detector (stem, width, weights, head, batch norm, export)."""
