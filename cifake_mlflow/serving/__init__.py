"""Stage 7, serving: the logged pyfunc, request decoding, the server, batch and Spark scoring."""
