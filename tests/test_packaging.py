"""Packaging: the public namespace and the callable ``presets`` module."""
import builtins
import sys
import types
import sparseflash as sf


# ----------------------------------------------------------------------------- namespace
def test_star_import_shadows_no_builtin_and_no_stdlib_module():
    shadowed = set(sf.__all__) & (set(dir(builtins)) | set(sys.stdlib_module_names))
    assert not shadowed


def test_every_name_in_all_exists_and_is_listed_once():
    assert len(sf.__all__) == len(set(sf.__all__))
    assert [name for name in sf.__all__ if not hasattr(sf, name)] == []


def test_star_import_leaves_builtins_alone():
    namespace = {}
    exec("from sparseflash import *", namespace)
    assert "compile" not in namespace and "random" not in namespace
    assert namespace["dense"] is sf.dense


def test_compile_and_random_are_still_attributes():
    layout = sf.compile(sf.random(1), 256, block_size=16)
    assert layout.num_q_blocks == 16 and layout.max_row_blocks == 1


def test_presets_is_the_module_and_still_callable():
    import sparseflash.presets as module

    assert isinstance(module, types.ModuleType) and sf.presets is module
    assert module.load("local", window=1) == sf.local(1)
    assert sf.presets() == module.presets() == sorted(module.presets())
    assert "bigbird" in sf.presets()
    from sparseflash import presets

    assert presets is module and callable(presets)
