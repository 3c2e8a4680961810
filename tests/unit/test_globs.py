"""Path globs: '*' stays within a path part, '**' spans parts, and a path below a
matching directory matches; filters and unused globs."""

from pitreos.walk import PathFilter, glob_match


def test_glob_semantics() -> None:
    assert glob_match("state/shared_memory.bin", "state/*")
    assert glob_match("state/sub/x", "state/*")  # below the matching directory state/sub
    assert not glob_match("statex/y", "state*/z")
    assert not glob_match("a/b", "a?b")  # '?' never matches '/'
    assert glob_match("state/sub/x", "state/**")
    assert glob_match("blocks/blocks.log", "**/*.log")
    assert not glob_match("blocks/blocks.log.bak", "**/*.log")


def test_filter_include_exclude_and_unused() -> None:
    paths = ["state/shared_memory.bin", "state/code_cache.bin", "blocks/blocks.log"]
    flt = PathFilter(include=("state/**",), exclude=("**/code_cache.bin", "nothing/**"))
    assert flt.apply(paths) >= {"state/shared_memory.bin"}
    assert "state/code_cache.bin" not in flt.apply(paths)
    assert "blocks/blocks.log" not in flt.apply(paths)
    assert flt.unused(paths) == ["nothing/**"]
