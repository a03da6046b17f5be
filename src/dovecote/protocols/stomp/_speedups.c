/*
 * Optional C accelerator for the two hottest pieces of the STOMP codec (see speedups.py):
 *
 * scan_frame(buf, pos, max_header_bytes, max_headers, max_body_bytes, commands)
 *     The common frame, decoded: (command, headers, body, next_pos), or None for anything
 *     else -- an incomplete frame, an error, escapes, CRs, non-ASCII headers, an odd
 *     content-length. None sends the caller to the pure-Python decoder (codec.py), which is
 *     the reference: it re-parses from the same position and gives the answer (a frame,
 *     NEED_DATA or the protocol error). So this function never decides anything the Python
 *     decoder would decide differently; it only takes the fast road when the road is plain.
 *
 * encode_tail(message_id, destination_line, expires, priority, timestamp, persistent,
 *             properties, body, mode)
 *     The shared part of a MESSAGE frame, byte for byte what MessageEncoder.tail builds in
 *     Python: message-id, the (already escaped) destination line, expires, priority,
 *     timestamp, persistent:true if set, each property, content-length, a blank line, the
 *     body and NUL. ``mode`` is the escaping: 0 none (STOMP 1.0), 1 STOMP 1.1 (backslash,
 *     LF, colon), 2 STOMP 1.2 (and CR).
 *
 * Every length is checked against the buffer; nothing here keeps a pointer into a Python
 * object past the call.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* --- scan_frame --------------------------------------------------------------------------- */

static const char CONTENT_LENGTH[] = "content-length";
#define CONTENT_LENGTH_SIZE 14
#define MAX_LENGTH_DIGITS 12

static PyObject *
ascii_str(const char *start, Py_ssize_t size)
{
    /* The caller checked every octet is below 0x80. */
    return PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, start, size);
}

static PyObject *
scan_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "scan_frame takes 6 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_header_bytes = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_headers = PyLong_AsSsize_t(args[3]);
    Py_ssize_t max_body_bytes = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *commands = args[5];
    if (!PyDict_Check(commands)) {
        PyErr_SetString(PyExc_TypeError, "commands must be a dict");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const char *buf = (const char *)view.buf;
    Py_ssize_t end = view.len;
    PyObject *result = NULL;
    PyObject *headers = NULL;

    if (pos < 0) {
        goto fallback;
    }
    /* Heart-beat EOLs between frames. */
    while (pos < end && (buf[pos] == '\n' || buf[pos] == '\r')) {
        pos++;
    }
    if (pos >= end) {
        goto fallback;
    }
    /* The header block: plain ASCII, no CR, NUL or backslash, ended by LF LF. */
    Py_ssize_t head_end = -1;
    Py_ssize_t lines = 0;
    for (Py_ssize_t i = pos; i < end; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == '\n') {
            if (i + 1 < end && buf[i + 1] == '\n') {
                head_end = i;
                break;
            }
            lines++;
        }
        else if (c >= 0x80 || c == '\r' || c == '\0' || c == '\\') {
            goto fallback;
        }
    }
    if (head_end < 0 || head_end - pos > max_header_bytes || lines > max_headers) {
        goto fallback;
    }
    Py_ssize_t body_start = head_end + 2;

    /* The command line. */
    const char *line_end = memchr(buf + pos, '\n', (size_t)(head_end - pos));
    Py_ssize_t command_end = line_end == NULL ? head_end : line_end - buf;
    PyObject *wire = PyBytes_FromStringAndSize(buf + pos, command_end - pos);
    if (wire == NULL) {
        goto error;
    }
    PyObject *command = PyDict_GetItemWithError(commands, wire); /* borrowed */
    Py_DECREF(wire);
    if (command == NULL) {
        if (PyErr_Occurred()) {
            goto error;
        }
        goto fallback;
    }

    /* Header lines: name, colon, value; the first of a repeated name wins. */
    headers = PyDict_New();
    if (headers == NULL) {
        goto error;
    }
    Py_ssize_t length = -1; /* content-length, if given */
    Py_ssize_t at = command_end + 1;
    while (at <= head_end && command_end < head_end) {
        const char *next = memchr(buf + at, '\n', (size_t)(head_end - at));
        Py_ssize_t stop = next == NULL ? head_end : next - buf;
        const char *colon = memchr(buf + at, ':', (size_t)(stop - at));
        if (colon == NULL) {
            goto fallback;
        }
        Py_ssize_t name_size = colon - (buf + at);
        Py_ssize_t value_start = colon - buf + 1;
        PyObject *name = ascii_str(buf + at, name_size);
        if (name == NULL) {
            goto error;
        }
        int known = PyDict_Contains(headers, name);
        if (known < 0) {
            Py_DECREF(name);
            goto error;
        }
        if (!known) {
            if (name_size == CONTENT_LENGTH_SIZE &&
                memcmp(buf + at, CONTENT_LENGTH, CONTENT_LENGTH_SIZE) == 0) {
                Py_ssize_t digits = stop - value_start;
                if (digits < 1 || digits > MAX_LENGTH_DIGITS) {
                    Py_DECREF(name);
                    goto fallback;
                }
                length = 0;
                for (Py_ssize_t i = value_start; i < stop; i++) {
                    if (buf[i] < '0' || buf[i] > '9') {
                        Py_DECREF(name);
                        goto fallback;
                    }
                    length = length * 10 + (buf[i] - '0');
                }
            }
            PyObject *value = ascii_str(buf + value_start, stop - value_start);
            if (value == NULL) {
                Py_DECREF(name);
                goto error;
            }
            int failed = PyDict_SetItem(headers, name, value);
            Py_DECREF(value);
            if (failed) {
                Py_DECREF(name);
                goto error;
            }
        }
        Py_DECREF(name);
        at = stop + 1;
    }

    /* The body: content-length octets then NUL, or up to the first NUL. */
    Py_ssize_t body_end;
    if (length >= 0) {
        if (length > max_body_bytes) {
            goto fallback;
        }
        body_end = body_start + length;
        if (body_end >= end || buf[body_end] != '\0') {
            goto fallback;
        }
    }
    else {
        Py_ssize_t limit = body_start + max_body_bytes + 1;
        if (limit > end) {
            limit = end;
        }
        if (body_start > limit) {
            goto fallback;
        }
        const char *nul = memchr(buf + body_start, '\0', (size_t)(limit - body_start));
        if (nul == NULL) {
            goto fallback;
        }
        body_end = nul - buf;
    }
    PyObject *body = PyBytes_FromStringAndSize(buf + body_start, body_end - body_start);
    if (body == NULL) {
        goto error;
    }
    PyObject *next_pos = PyLong_FromSsize_t(body_end + 1);
    if (next_pos == NULL) {
        Py_DECREF(body);
        goto error;
    }
    Py_INCREF(command);
    result = PyTuple_Pack(4, command, headers, body, next_pos);
    Py_DECREF(command);
    Py_DECREF(body);
    Py_DECREF(next_pos);
    Py_DECREF(headers);
    PyBuffer_Release(&view);
    return result;

fallback:
    Py_XDECREF(headers);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;

error:
    Py_XDECREF(headers);
    PyBuffer_Release(&view);
    return NULL;
}

/* --- encode_tail -------------------------------------------------------------------------- */

/* Octets ``text`` takes once escaped for ``mode`` (see the module comment). */
static Py_ssize_t
escaped_size(const char *text, Py_ssize_t size, int mode)
{
    Py_ssize_t out = size;
    if (mode == 0) {
        return out;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        char c = text[i];
        if (c == '\\' || c == '\n' || c == ':' || (c == '\r' && mode == 2)) {
            out++;
        }
    }
    return out;
}

static char *
put_escaped(char *out, const char *text, Py_ssize_t size, int mode)
{
    if (mode == 0) {
        memcpy(out, text, (size_t)size);
        return out + size;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        char c = text[i];
        switch (c) {
        case '\\':
            *out++ = '\\';
            *out++ = '\\';
            break;
        case '\n':
            *out++ = '\\';
            *out++ = 'n';
            break;
        case ':':
            *out++ = '\\';
            *out++ = 'c';
            break;
        case '\r':
            if (mode == 2) {
                *out++ = '\\';
                *out++ = 'r';
                break;
            }
            *out++ = c;
            break;
        default:
            *out++ = c;
        }
    }
    return out;
}

static char *
put(char *out, const char *text, Py_ssize_t size)
{
    memcpy(out, text, (size_t)size);
    return out + size;
}

#define MAX_FIELDS 3 /* expires, priority, timestamp */

static PyObject *
encode_tail(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "encode_tail takes 9 arguments");
        return NULL;
    }
    Py_ssize_t id_size, destination_size;
    const char *message_id = PyUnicode_AsUTF8AndSize(args[0], &id_size);
    if (message_id == NULL) {
        return NULL;
    }
    const char *destination = PyUnicode_AsUTF8AndSize(args[1], &destination_size);
    if (destination == NULL) {
        return NULL;
    }
    long long numbers[MAX_FIELDS];
    for (int i = 0; i < MAX_FIELDS; i++) {
        numbers[i] = PyLong_AsLongLong(args[2 + i]);
        if (numbers[i] == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    int persistent = PyObject_IsTrue(args[5]);
    if (persistent < 0) {
        return NULL;
    }
    PyObject *properties = args[6];
    if (!PyDict_Check(properties)) {
        PyErr_SetString(PyExc_TypeError, "properties must be a dict");
        return NULL;
    }
    Py_buffer body;
    if (PyObject_GetBuffer(args[7], &body, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    long mode = PyLong_AsLong(args[8]);
    if (mode < 0 || mode > 2) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "mode must be 0, 1 or 2");
        }
        PyBuffer_Release(&body);
        return NULL;
    }

    static const char *const labels[MAX_FIELDS] = {"expires:", "priority:", "timestamp:"};
    char fields[MAX_FIELDS][32];
    int field_sizes[MAX_FIELDS];
    char length_text[32];
    int length_size = snprintf(length_text, sizeof length_text, "%zd", body.len);
    for (int i = 0; i < MAX_FIELDS; i++) {
        field_sizes[i] = snprintf(fields[i], sizeof fields[i], "%lld", numbers[i]);
    }

    /* First pass: the exact size. */
    Py_ssize_t total = 11 + escaped_size(message_id, id_size, (int)mode) + 1; /* message-id: */
    total += destination_size;
    for (int i = 0; i < MAX_FIELDS; i++) {
        total += (Py_ssize_t)strlen(labels[i]) + field_sizes[i] + 1;
    }
    if (persistent) {
        total += 16; /* persistent:true\n */
    }
    Py_ssize_t iter = 0;
    PyObject *key, *value;
    while (PyDict_Next(properties, &iter, &key, &value)) {
        Py_ssize_t key_size, value_size;
        const char *k = PyUnicode_AsUTF8AndSize(key, &key_size);
        if (k == NULL) {
            PyBuffer_Release(&body);
            return NULL;
        }
        const char *v = PyUnicode_AsUTF8AndSize(value, &value_size);
        if (v == NULL) {
            PyBuffer_Release(&body);
            return NULL;
        }
        total += escaped_size(k, key_size, (int)mode) + 1 + escaped_size(v, value_size, (int)mode)
                 + 1;
    }
    total += 15 + length_size + 2 + body.len + 1; /* content-length:N\n\n body NUL */

    PyObject *tail = PyBytes_FromStringAndSize(NULL, total);
    if (tail == NULL) {
        PyBuffer_Release(&body);
        return NULL;
    }
    /* Second pass: the octets. (The dict cannot change in between: no Python code ran.) */
    char *out = PyBytes_AS_STRING(tail);
    out = put(out, "message-id:", 11);
    out = put_escaped(out, message_id, id_size, (int)mode);
    *out++ = '\n';
    out = put(out, destination, destination_size);
    for (int i = 0; i < MAX_FIELDS; i++) {
        out = put(out, labels[i], (Py_ssize_t)strlen(labels[i]));
        out = put(out, fields[i], field_sizes[i]);
        *out++ = '\n';
    }
    if (persistent) {
        out = put(out, "persistent:true\n", 16);
    }
    iter = 0;
    while (PyDict_Next(properties, &iter, &key, &value)) {
        Py_ssize_t key_size, value_size;
        const char *k = PyUnicode_AsUTF8AndSize(key, &key_size);
        const char *v = PyUnicode_AsUTF8AndSize(value, &value_size);
        out = put_escaped(out, k, key_size, (int)mode);
        *out++ = ':';
        out = put_escaped(out, v, value_size, (int)mode);
        *out++ = '\n';
    }
    out = put(out, "content-length:", 15);
    out = put(out, length_text, length_size);
    *out++ = '\n';
    *out++ = '\n';
    out = put(out, (const char *)body.buf, body.len);
    *out++ = '\0';
    PyBuffer_Release(&body);
    if (out - PyBytes_AS_STRING(tail) != total) {
        Py_DECREF(tail);
        PyErr_SetString(PyExc_SystemError, "encode_tail: size mismatch");
        return NULL;
    }
    return tail;
}

/* --- module ------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"scan_frame", (PyCFunction)(void (*)(void))scan_frame, METH_FASTCALL,
     "scan_frame(buf, pos, max_header_bytes, max_headers, max_body_bytes, commands)"},
    {"encode_tail", (PyCFunction)(void (*)(void))encode_tail, METH_FASTCALL,
     "encode_tail(message_id, destination_line, expires, priority, timestamp, persistent, "
     "properties, body, mode)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "dovecote.protocols.stomp._speedups",
    "Optional C accelerator for the STOMP codec (see speedups.py).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
