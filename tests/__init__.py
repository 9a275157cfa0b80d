"""colabmagic's test suite.  A regular package, so that `tests.builders` is ours in
every process: IPython 7 puts its own `IPython/extensions/tests` package on sys.path,
which would otherwise win over a namespace package in a spawned worker."""
