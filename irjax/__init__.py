"""irjax: first-stage neural retrieval in JAX/Flax.

Data flows one way: collection -> tokenized batches -> model -> embeddings -> index -> run -> metrics.
Each arrow is a plain function or small class in the subpackages below; gin binds them at the edge
(`irjax.main`).
"""

__version__ = "0.1.0"
