"""Stage 1, data: image files -> decoded, checked, cached 32x32 arrays -> tf.data batches."""
