// The importable module mminference._C. It exposes no Python functions: importing it loads this
// shared object, whose static TORCH_LIBRARY registrations make the ops visible as
// torch.ops.mminference.*. The dispatcher is the only binding layer (no pybind11).
#include <Python.h>

static struct PyModuleDef mminference_c_module = {
    PyModuleDef_HEAD_INIT,
    "_C",
    "mminference compiled ops (registered with torch.library on import)",
    -1,
    nullptr,
};

extern "C" PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&mminference_c_module); }
