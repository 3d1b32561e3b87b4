"""irjax's entry point: absl flags + gin, nothing else.

    python -m irjax.main --gin_file=gin/eval/bm25.gin --gin.DATA_DIR="'scifact'" --gin.WORKDIR="'/tmp/w'"

`--gin.KEY=VALUE` is shorthand for `--gin_bindings=KEY=VALUE` (the t5x convention). The gin files bind
`irjax.run.job` to the function to run; everything else is plain library code registered in
`irjax.gin_registry`.
"""
from __future__ import annotations

import sys
from typing import Sequence

from absl import app, flags, logging

flags.DEFINE_multi_string("gin_file", [], "Gin config files, applied in order.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, applied after the files.")
flags.DEFINE_multi_string("gin_search_path", [], "Extra directories in which to look for gin files.")
FLAGS = flags.FLAGS


def _main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from irjax import gin_config  # heavy imports only after flag parsing
    from irjax.parallel.distributed import initialize_distributed

    initialize_distributed()  # before any device is touched; a no-op for one process

    gin_config.parse(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_path)
    result = gin_config.run_job()
    logging.info("job finished: %s", result)


def main() -> None:
    from irjax.gin_config import rewrite_gin_args

    app.run(_main, argv=rewrite_gin_args(sys.argv))


if __name__ == "__main__":
    main()
