"""`localbvi info` (what is in a GGUF file) and `localbvi doctor` (what this machine can do)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

from localbvi.cli.common import progress_printer
from localbvi.errors import RefError, printable

__all__ = ["doctor_facts", "register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="what a GGUF model file holds (fast: reads the header only)",
        description="Show a model's metadata: architecture, parameters, quantization, context, "
        "chat template, BOS/EOS tokens and estimated RAM.",
    )
    p.add_argument("ref", metavar="REF", help="path, catalog id or Hub ref")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--template", action="store_true", help="print the whole chat template")
    p.set_defaults(handler=_info)

    p = sub.add_parser(
        "doctor",
        help="llama.cpp build features, GPU offload, threads, memory",
        description="Check what this machine and this llama.cpp build can do.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_doctor)


def _info(args: argparse.Namespace) -> int:
    from localbvi.engine.host import is_remote_ref
    from localbvi.inspector import format_info, inspect_gguf
    from localbvi.store.refs import resolve

    if is_remote_ref(args.ref):
        raise RefError(
            f"{args.ref} is a server, not a file: `info` reads GGUF files "
            "(try `localbvi complete -m URL …` to use the server)"
        )
    resolved = resolve(args.ref, on_progress=progress_printer())
    info = inspect_gguf(resolved.path)
    if args.json:
        print(json.dumps(info.to_json(), ensure_ascii=False, indent=2))
    else:
        print(format_info(info))
        if args.template and info.chat_template:
            print("\n" + printable(info.chat_template))  # a file's text: no escape codes
    return 0


def _mem_available() -> tuple[int | None, int | None]:
    """(total, available) bytes of RAM, where the platform says."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return fields.get("MemTotal"), fields.get("MemAvailable")
    except (OSError, ValueError, IndexError):
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None, None


def doctor_facts() -> dict[str, Any]:
    """Facts about this machine and the llama.cpp build (imports llama_cpp: not for start-up)."""
    from localbvi.engine.worker import default_threads

    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "default_threads": default_threads(),
    }
    total, available = _mem_available()
    facts["ram_total_bytes"] = total
    facts["ram_available_bytes"] = available
    try:
        import llama_cpp

        facts["llama_cpp_python"] = getattr(llama_cpp, "__version__", "unknown")
        facts["gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
        facts["mmap"] = bool(llama_cpp.llama_supports_mmap())
        facts["mlock"] = bool(llama_cpp.llama_supports_mlock())
        facts["system_info"] = (
            llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
        )
    except Exception as exc:  # a broken build is exactly what doctor must report
        facts["llama_cpp_python"] = None
        facts["error"] = f"llama-cpp-python does not load: {exc}"
    facts["cpu_extra_buffers"] = _extra_buffer_facts(str(facts.get("system_info", "")))
    return facts


def _extra_buffer_facts(system_info: str) -> dict[str, Any]:
    """AMX on the CPU and in the build, the load setting, and what `auto` decided and why."""
    from localbvi.engine import cpu_buffers
    from localbvi.settings import load_settings

    setting = load_settings().settings.engine.cpu_extra_buffers
    kinds = [name for name in ("AMX_INT8", "REPACK") if f"{name} = 1" in system_info]
    known = cpu_buffers.recall()
    decision: str
    if setting != "auto":
        decision, why = setting, "set in the settings file (cpu_extra_buffers)"
    elif known is None:
        decision, why = "undecided", "the next model load tries them once (a warm-up decode)"
    else:
        decision = "on" if known["extra_buffers"] else "off"
        why = f"{known.get('reason', '')} ({known.get('decided', '')})"
    return {
        "cpu_amx": cpu_buffers.cpu_has_amx(),
        "build_extra_buffer_types": kinds,
        "setting": setting,
        "decision": decision,
        "reason": why,
        "decision_file": str(cpu_buffers.decision_path()),
    }


def _yes(flag: object) -> str:
    return "yes" if flag else "no"


def _doctor(args: argparse.Namespace) -> int:
    facts = doctor_facts()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0 if facts.get("llama_cpp_python") else 1

    def gb(n: int | None) -> str:
        return f"{n / 1e9:.1f} GB" if n else "unknown"

    threads = facts["default_threads"]
    ram = f"{gb(facts['ram_available_bytes'])} available of {gb(facts['ram_total_bytes'])}"
    lines = [
        f"python            {facts['python']} on {facts['platform']}",
        f"CPU cores         {facts['cpu_count']} (localbvi uses {threads} threads)",
        f"RAM               {ram}",
    ]
    if facts.get("llama_cpp_python"):
        offload = (
            "yes"
            if facts["gpu_offload"]
            else ("no: this build runs on the CPU only (see README: building with CUDA or Metal)")
        )
        lines += [
            f"llama-cpp-python  {facts['llama_cpp_python']}",
            f"GPU offload       {offload}",
            f"mmap / mlock      {_yes(facts['mmap'])} / {_yes(facts['mlock'])}",
            f"build features    {facts['system_info']}",
        ]
    eb = facts["cpu_extra_buffers"]
    kinds = ", ".join(eb["build_extra_buffer_types"]) or "none"
    lines += [
        f"CPU AMX           {_yes(eb['cpu_amx'])}",
        f"extra buffers     this build has: {kinds}; setting {eb['setting']}; "
        f"in use: {eb['decision']}: {eb['reason']}",
    ]
    if facts.get("llama_cpp_python"):
        print("\n".join(lines))
        return 0
    print("\n".join(lines))
    print(f"localbvi: error: {facts['error']}", file=sys.stderr)
    return 1
