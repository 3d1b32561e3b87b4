"""irjax's entry point: absl flags + gin, nothing else.

    python -m irjax.main --gin_file=gin/eval/bm25.gin --gin.DATA_DIR="'scifact'" --gin.WORKDIR="'/tmp/w'"

`--gin.KEY=VALUE` is shorthand for `--gin_bindings=KEY=VALUE` (the t5x convention). The gin files bind
`irjax.run.job` to the function to run; everything else is plain library code registered in
`irjax.gin_config`.

Errors the user can fix -- a malformed collection or input file, a config gin rejects or cannot
call, a damaged index or checkpoint, missing weights (`irjax.errors.UserError`) -- are printed as
one message, `irjax: error: ...`, on stderr, and the process exits with status 2. Anything else is
a bug and propagates with its full traceback (exit status 1). To see the traceback of a user error
too (still exit status 2), pass `--traceback` or set IRJAX_TRACEBACK=1.

In a multi-process job a failing process exits at once (after printing), without JAX's shutdown
barrier: the others would otherwise wait for it until the barrier's timeout (minutes) before
anyone learns of the error; launchers stop the rest as soon as one process exits non-zero.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Sequence

from absl import app, flags, logging

flags.DEFINE_multi_string("gin_file", [], "Gin config files, applied in order.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, applied after the files.")
flags.DEFINE_multi_string("gin_search_path", [], "Extra directories in which to look for gin files.")
flags.DEFINE_boolean("traceback", os.environ.get("IRJAX_TRACEBACK", "") not in ("", "0"),
                     "Show the full traceback of user errors (bad input or config) too; by default "
                     "they print one message. Defaults to true when IRJAX_TRACEBACK=1.")
FLAGS = flags.FLAGS

USER_ERROR_STATUS = 2  # like argparse's usage errors: the input was wrong, not the program


def _main(argv: Sequence[str]) -> int | None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from irjax import gin_config  # heavy imports only after flag parsing
    from irjax.parallel.distributed import initialize_distributed

    initialize_distributed()  # before any device is touched; a no-op for one process

    try:
        gin_config.parse(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_path)
        result = gin_config.run_job()
    except Exception as e:
        message = gin_config.user_error_message(e)
        if message is None:
            _exit_now_if_distributed(1, print_traceback=True)
            raise
        if FLAGS.traceback:
            traceback.print_exc()
        print(f"irjax: error: {message}", file=sys.stderr, flush=True)
        _exit_now_if_distributed(USER_ERROR_STATUS)
        return USER_ERROR_STATUS
    logging.info("job finished: %s", result)
    return None


def _exit_now_if_distributed(status: int, print_traceback: bool = False) -> None:
    """Ends a process of a multi-process job immediately (module docstring)."""
    import jax

    if jax.process_count() > 1:
        if print_traceback:
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def main() -> None:
    from irjax.gin_config import rewrite_gin_args

    app.run(_main, argv=rewrite_gin_args(sys.argv))


if __name__ == "__main__":
    main()
