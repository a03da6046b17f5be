/*
 * Optional C accelerator for the journal's most frequent record decode (see record.py):
 *
 * configure(message_class, anycast, multicast, no_properties)
 *     Called once on import: what decode_message_added builds its messages with (a message
 *     without properties gets the shared no_properties dict, as in the reference).
 *
 * decode_message_added(payload, with_body)
 *     A MESSAGE_ADDED payload (record.py documents the layout) as (queue, seq, message), or
 *     None when anything is out of place: a field past the end, text that is not UTF-8, a
 *     priority above 9. None sends the caller to the pure-Python decoder, the reference,
 *     which then raises CorruptRecord: so this never accepts what the reference refuses, and
 *     builds exactly what the reference builds from the rest.
 *
 * Recovery decodes every message in the journal with it (the time to the first message after
 * a restart), and paged-out messages are read back with it at dispatch.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_PRIORITY 9
#define FIXED_SIZE 21 /* routing u8, priority u8, persistent u8, expires i64, ts i64, count u16 */

static PyObject *message_class = NULL;
static PyObject *anycast = NULL;
static PyObject *multicast = NULL;
static PyObject *no_properties = NULL;

static uint64_t
get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static unsigned
get_u16(const unsigned char *p)
{
    return ((unsigned)p[0] << 8) | p[1];
}

static uint32_t
get_u32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* A length-prefixed UTF-8 string at *pos (prefix of ``width`` octets); NULL with no Python
 * error set when it does not fit or is not UTF-8 (the caller answers None). */
static PyObject *
take_str(const unsigned char *buf, Py_ssize_t size, Py_ssize_t *pos, int width)
{
    if (*pos + width > size) {
        return NULL;
    }
    Py_ssize_t length = width == 2 ? (Py_ssize_t)get_u16(buf + *pos) : (Py_ssize_t)get_u32(buf + *pos);
    Py_ssize_t start = *pos + width;
    if (length > size - start) {
        return NULL;
    }
    *pos = start + length;
    PyObject *text = PyUnicode_DecodeUTF8((const char *)buf + start, length, "strict");
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
    }
    return text;
}

static PyObject *
configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "configure takes 4 arguments");
        return NULL;
    }
    Py_XSETREF(message_class, Py_NewRef(args[0]));
    Py_XSETREF(anycast, Py_NewRef(args[1]));
    Py_XSETREF(multicast, Py_NewRef(args[2]));
    Py_XSETREF(no_properties, Py_NewRef(args[3]));
    Py_RETURN_NONE;
}

static PyObject *
decode_message_added(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode_message_added takes 2 arguments");
        return NULL;
    }
    if (message_class == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() was not called");
        return NULL;
    }
    int with_body = PyObject_IsTrue(args[1]);
    if (with_body < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t size = view.len;
    Py_ssize_t pos = 0;
    PyObject *queue = NULL, *seq = NULL, *message_id = NULL, *address = NULL;
    PyObject *properties = NULL, *body = NULL, *message = NULL, *result = NULL;
    PyObject *expires = NULL, *timestamp = NULL, *priority_obj = NULL;

    queue = take_str(buf, size, &pos, 2);
    if (queue == NULL) {
        goto done;
    }
    if (pos + 8 > size) {
        goto done;
    }
    seq = PyLong_FromUnsignedLongLong(get_u64(buf + pos));
    if (seq == NULL) {
        goto done;
    }
    pos += 8;
    message_id = take_str(buf, size, &pos, 2);
    if (message_id == NULL) {
        goto done;
    }
    address = take_str(buf, size, &pos, 2);
    if (address == NULL) {
        goto done;
    }
    if (pos + FIXED_SIZE > size) {
        goto done;
    }
    const unsigned char *fixed = buf + pos;
    unsigned routing = fixed[0], priority = fixed[1], persistent = fixed[2];
    int64_t expires_value = (int64_t)get_u64(fixed + 3);
    int64_t timestamp_value = (int64_t)get_u64(fixed + 11);
    unsigned count = get_u16(fixed + 19);
    pos += FIXED_SIZE;
    if (priority > MAX_PRIORITY) {
        goto done;
    }
    properties = count ? PyDict_New() : Py_NewRef(no_properties);
    if (properties == NULL) {
        goto done;
    }
    for (unsigned i = 0; i < count; i++) {
        PyObject *name = take_str(buf, size, &pos, 2);
        if (name == NULL) {
            goto done;
        }
        PyObject *value = take_str(buf, size, &pos, 4);
        if (value == NULL) {
            Py_DECREF(name);
            goto done;
        }
        int failed = PyDict_SetItem(properties, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (failed) {
            goto done;
        }
    }
    body = with_body ? PyBytes_FromStringAndSize((const char *)buf + pos, size - pos)
                     : PyBytes_FromStringAndSize("", 0);
    expires = PyLong_FromLongLong(expires_value);
    timestamp = PyLong_FromLongLong(timestamp_value);
    priority_obj = PyLong_FromLong((long)priority);
    if (body == NULL || expires == NULL || timestamp == NULL || priority_obj == NULL) {
        goto done;
    }
    PyObject *fields[9] = {
        message_id,
        address,
        routing ? multicast : anycast,
        body,
        properties,
        persistent ? Py_True : Py_False,
        priority_obj,
        expires,
        timestamp,
    };
    message = PyObject_Vectorcall(message_class, fields, 9, NULL);
    if (message == NULL) {
        goto done;
    }
    result = PyTuple_Pack(3, queue, seq, message);

done:
    PyBuffer_Release(&view);
    Py_XDECREF(queue);
    Py_XDECREF(seq);
    Py_XDECREF(message_id);
    Py_XDECREF(address);
    Py_XDECREF(properties);
    Py_XDECREF(body);
    Py_XDECREF(expires);
    Py_XDECREF(timestamp);
    Py_XDECREF(priority_obj);
    Py_XDECREF(message);
    if (result == NULL && !PyErr_Occurred()) {
        Py_RETURN_NONE; /* out of place: the reference decides */
    }
    return result;
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(message_class, anycast, multicast, no_properties)"},
    {"decode_message_added", (PyCFunction)(void (*)(void))decode_message_added, METH_FASTCALL,
     "decode_message_added(payload, with_body) -> (queue, seq, message) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "dovecote.store._records",
    "Optional C accelerator for journal record decoding (see record.py).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__records(void)
{
    return PyModule_Create(&module);
}
