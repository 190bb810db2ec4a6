"""Torch-free pieces of the `vitssl` command line: the one-line-error parser, checked option types
(`arguments`) and the options several sub-commands share (`shared_options`). The benchmark
scripts use them too, so they live outside `vitssl.commands`."""
