"""Build of mminference: the C11 core as a static library, the torch op extension over it, and the
CUDA kernels where nvcc and a CUDA build of torch are both present (MMI_FORCE_CPU=1 skips them).

Install with `pip install --no-build-isolation .` once torch is installed: an isolated build would
fetch a second, multi-GB torch."""

import glob
import os

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _want_cuda() -> bool:
    if os.environ.get("MMI_FORCE_CPU") == "1":
        return False
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and CUDA_HOME is not None and bool(_sources("csrc/cuda/*.cu"))


def _extensions():
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    include_dirs = [os.path.join(ROOT, "csrc", "core"), os.path.join(ROOT, "csrc", "cuda")]
    cxx_flags = ["-O3", "-DPy_LIMITED_API=0x030A0000"]
    sources = _sources("csrc/ext/*.cpp")
    if _want_cuda():
        arch_flags = os.environ.get(
            "MMI_CUDA_ARCH_FLAGS",
            "-gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90a,code=sm_90a",
        ).split()
        return [
            CUDAExtension(
                "mminference._C",
                sources + _sources("csrc/ext/cuda/*.cpp") + _sources("csrc/cuda/*.cu"),
                include_dirs=include_dirs,
                define_macros=[("MMI_WITH_CUDA", "1")],
                extra_compile_args={
                    "cxx": cxx_flags,
                    "nvcc": ["-O3", "--use_fast_math", "-lineinfo", *arch_flags],
                },
                extra_link_args=["-fopenmp"],
                py_limited_api=True,
            )
        ]
    return [
        CppExtension(
            "mminference._C",
            sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
            py_limited_api=True,
        )
    ]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    class BuildExtensionWithCore(BuildExtension):
        """`build_ext` alone (e.g. `--inplace`) must still build the C core library first."""

        def run(self):
            self.run_command("build_clib")
            super().run()

    return {"build_ext": BuildExtensionWithCore.with_options(no_python_abi_suffix=True)}


setup(
    # The core is plain C11 built by the C compiler (never as C++), then linked into the extension.
    libraries=[
        (
            "mmi_core",
            {
                "sources": _sources("csrc/core/*.c"),
                "include_dirs": [os.path.join(ROOT, "csrc", "core")],
                "cflags": ["-std=c11", "-O3", "-fPIC", "-fopenmp", "-Wall", "-Wextra"],
            },
        )
    ],
    ext_modules=_extensions(),
    cmdclass=_cmdclass(),
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
