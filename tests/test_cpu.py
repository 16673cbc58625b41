"""vit.cpu: the CPU facts that pick a bf16 code path."""

from __future__ import annotations

import pytest

from vit import cpu


@pytest.mark.parametrize(("flags", "native"), [({"avx2", "fma"}, False), ({"avx512f", "avx512_bf16"}, True),
                                               ({"amx_bf16", "amx_tile"}, True), (set(), False)])
def test_bf16_matmul_needs_bf16_instructions(monkeypatch, flags, native):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    assert cpu.has_bf16_matmul() is native


def test_flags_are_read_from_proc_cpuinfo(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2 amx_bf16\n")
    monkeypatch.setattr(cpu, "CPUINFO", fake)
    cpu.cpu_flags.cache_clear()
    try:
        assert cpu.cpu_flags() == {"fpu", "avx2", "amx_bf16"}
    finally:
        cpu.cpu_flags.cache_clear()
