/* The compiled twin of registry.plain_forms.python_plain_forms: same contract, same bytes.
 *
 * idis import spends most of its time turning decoded JSONL records into stored rows.  In
 * Python that means a tuple per value, a list per record and orjson walking them again; here
 * the stored JSON is written straight from the decoded records into one buffer.  Only what
 * the Python function does is done, in the same order; a record it would not take is left
 * to the caller, so every judgement about a bad record stays in Python.
 *
 * JSON strings are escaped as orjson escapes them ("\"", "\\", \b \t \n \f \r, other
 * controls as \u00XX in lower-case hex, everything else as UTF-8), so the bytes are orjson's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>  /* PyMember_GetOne, before Python 3.12 */

#define ADMIN_INDEX 100

/* An attribute read by name, and where it was last found: msgspec's fields are members of
 * their struct types, which PyMember_GetOne reads without looking the name up through the
 * type's MRO on each read, a third of what this module spent. */
typedef struct {
    const char *text;
    PyObject *name;
    PyTypeObject *type;       /* a strong reference: its address cannot be reused meanwhile */
    unsigned int version;     /* the type's version tag, which changes if the type does */
    PyMemberDef *member;      /* NULL: read by PyObject_GetAttr */
} Field;

static Field f_handle = {.text = "handle"}, f_values = {.text = "values"},
             f_index = {.text = "index"}, f_type = {.text = "type"}, f_data = {.text = "data"},
             f_ttl = {.text = "ttl"}, f_value = {.text = "value"};

/* object.<field>, a new reference (NULL with an exception set if there is none). */
static PyObject *get(PyObject *object, Field *field) {
    PyTypeObject *type = Py_TYPE(object);
    PyMemberDef *member = field->member;
    if (type != field->type || type->tp_version_tag != field->version
        || !PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG)) {
        /* Looking the name up can run Python code, and so let another thread use the field:
         * what is found stays local until it is stored whole, with no Python code between. */
        member = NULL;
        PyObject *descriptor = PyObject_GetAttr((PyObject *)type, field->name);
        /* The version tag, assigned on a type's first attribute lookup, is read after one. */
        unsigned int version = type->tp_version_tag;
        if (descriptor == NULL) {
            PyErr_Clear();  /* read by name: PyObject_GetAttr says what is wrong */
        } else if (Py_IS_TYPE(descriptor, &PyMemberDescr_Type)
                   && type->tp_getattro == PyObject_GenericGetAttr
                   && PyType_IsSubtype(type, ((PyDescrObject *)descriptor)->d_type)) {
            /* A member of the object's class, which wins over an instance's __dict__; it
             * points into the type, which the object keeps alive. */
            member = ((PyMemberDescrObject *)descriptor)->d_member;
        }
        PyTypeObject *old = field->type;
        Py_INCREF(type);
        field->type = type;
        field->version = version;
        field->member = member;
        Py_XDECREF(descriptor);
        Py_XDECREF(old);
    }
    if (member != NULL) {
        return PyMember_GetOne((const char *)object, member);
    }
    return PyObject_GetAttr(object, field->name);
}

typedef struct {
    char *bytes;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Buffer;

static int reserve(Buffer *buffer, Py_ssize_t more) {
    if (buffer->size + more <= buffer->capacity) {
        return 0;
    }
    Py_ssize_t capacity = buffer->capacity ? buffer->capacity : 1024;
    while (capacity < buffer->size + more) {
        if (capacity > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        capacity *= 2;
    }
    char *grown = PyMem_Realloc(buffer->bytes, (size_t)capacity);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->bytes = grown;
    buffer->capacity = capacity;
    return 0;
}

static int put(Buffer *buffer, const char *bytes, Py_ssize_t size) {
    if (reserve(buffer, size) < 0) {
        return -1;
    }
    memcpy(buffer->bytes + buffer->size, bytes, (size_t)size);
    buffer->size += size;
    return 0;
}

static int put_int(Buffer *buffer, long long number) {
    char digits[24];
    int at = sizeof digits;
    unsigned long long rest = (unsigned long long)number;
    if (number < 0) {
        rest = 0ULL - rest;  /* the magnitude, LLONG_MIN's too */
    }
    do {
        digits[--at] = (char)('0' + rest % 10);
        rest /= 10;
    } while (rest);
    if (number < 0) {
        digits[--at] = '-';
    }
    return put(buffer, digits + at, (Py_ssize_t)sizeof digits - at);
}

/* A JSON string of text, which must be a str: 1 if it is not one, or cannot be UTF-8 (a lone
 * surrogate), -1 on failure. */
static int put_string(Buffer *buffer, PyObject *text) {
    static const char hex[] = "0123456789abcdef";
    if (!PyUnicode_CheckExact(text)) {
        return 1;
    }
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (utf8 == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            return -1;
        }
        PyErr_Clear();
        return 1;
    }
    /* At most 6 bytes for each byte of text, and the quotes. */
    if (size > (PY_SSIZE_T_MAX - 2) / 6) {
        PyErr_NoMemory();
        return -1;
    }
    if (reserve(buffer, 6 * size + 2) < 0) {
        return -1;
    }
    char *out = buffer->bytes + buffer->size;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)utf8[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\b': *out++ = 'b'; break;
        case '\t': *out++ = 't'; break;
        case '\n': *out++ = 'n'; break;
        case '\f': *out++ = 'f'; break;
        case '\r': *out++ = 'r'; break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 0xF];
        }
    }
    *out++ = '"';
    buffer->size = out - buffer->bytes;
    return 0;
}

/* An attribute that must be an int, as a long long: 1 if it is none, -1 on failure. */
static int int_attribute(PyObject *object, Field *field, long long *number) {
    PyObject *attribute = get(object, field);
    if (attribute == NULL) {
        return -1;
    }
    int result = 1;
    if (PyLong_CheckExact(attribute)) {
        int overflow;
        *number = PyLong_AsLongLongAndOverflow(attribute, &overflow);
        result = *number == -1 && PyErr_Occurred() ? -1 : overflow ? 1 : 0;
    }
    Py_DECREF(attribute);
    return result;
}

/* One value as a stored row, "[index,type,"string",data,ttl,now]": 1 if it is not of the
 * plain shape, -1 on failure. */
static int put_value(Buffer *buffer, PyObject *value, long long index, Buffer *now) {
    long long ttl;
    int status = int_attribute(value, &f_ttl, &ttl);
    if (status) {
        return status;
    }
    PyObject *data = get(value, &f_data);
    if (data == NULL) {
        return -1;
    }
    if (!PyUnicode_CheckExact(data)) {  /* {"format": "string", "value": ...} */
        Py_SETREF(data, get(data, &f_value));
        if (data == NULL) {
            return -1;
        }
    }
    PyObject *type = get(value, &f_type);
    if (type == NULL) {
        Py_DECREF(data);
        return -1;
    }
    if (put(buffer, "[", 1) < 0 || put_int(buffer, index) < 0 || put(buffer, ",", 1) < 0) {
        status = -1;
    } else if ((status = put_string(buffer, type)) == 0) {
        if (put(buffer, ",\"string\",", 10) < 0) {
            status = -1;
        } else if ((status = put_string(buffer, data)) == 0) {
            if (put(buffer, ",", 1) < 0 || put_int(buffer, ttl) < 0
                || put(buffer, now->bytes, now->size) < 0) {
                status = -1;
            }
        }
    }
    Py_DECREF(type);
    Py_DECREF(data);
    return status;
}

/* The stored form of one record into buffer: 1 if the record is not of the plain shape, -1
 * on failure. */
static int put_record(Buffer *buffer, PyObject *values, PyObject *admin, Buffer *now) {
    if (!PyList_CheckExact(values)) {
        return 1;
    }
    char *admin_bytes = PyBytes_AS_STRING(admin);
    Py_ssize_t admin_size = PyBytes_GET_SIZE(admin);
    long long last = 0;
    if (put(buffer, "[", 1) < 0) {
        return -1;
    }
    /* The length is read again: an attribute read by PyObject_GetAttr can run Python code. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        long long index;
        Py_INCREF(value);  /* and could take the value out of the list */
        int status = int_attribute(value, &f_index, &index);
        if (status == 0) {
            if (index <= last) {
                status = 1;  /* out of order, or twice */
            } else if (index >= ADMIN_INDEX && last < ADMIN_INDEX) {
                if (index == ADMIN_INDEX) {
                    status = 1;  /* an HS_ADMIN of its own */
                } else if (put(buffer, admin_bytes, admin_size) < 0 || put(buffer, ",", 1) < 0) {
                    status = -1;
                }
            }
        }
        if (status == 0 && (status = put_value(buffer, value, index, now)) == 0
            && put(buffer, ",", 1) < 0) {
            status = -1;
        }
        Py_DECREF(value);
        if (status) {
            return status;
        }
        last = index;
    }
    if (last < ADMIN_INDEX && put(buffer, admin_bytes, admin_size) < 0) {
        return -1;
    }
    if (buffer->bytes[buffer->size - 1] == ',') {
        buffer->size--;
    }
    return put(buffer, "]", 1);
}

/* The stored form of one record, appended to forms and its handle to texts: 1 if the record
 * is not of the plain shape, -1 on failure. */
static int take(PyObject *record, PyObject *admin_forms, Buffer *now, PyObject *texts,
                PyObject *forms, Buffer *buffer) {
    if (record == Py_None) {
        return 1;
    }
    PyObject *text = get(record, &f_handle);
    if (text == NULL) {
        return -1;
    }
    int status = 1;
    PyObject *prefix = NULL, *values = NULL, *form = NULL;
    if (!PyUnicode_CheckExact(text)) {
        goto done;
    }
    Py_ssize_t size = PyUnicode_GET_LENGTH(text);
    Py_ssize_t slash = PyUnicode_FindChar(text, '/', 0, size, 1);
    if (slash == -2) {
        status = -1;
        goto done;
    }
    if (slash < 0 || slash == size - 1) {
        goto done;  /* no suffix */
    }
    prefix = PyUnicode_Substring(text, 0, slash);
    if (prefix == NULL) {
        status = -1;
        goto done;
    }
    PyObject *admin = PyDict_GetItemWithError(admin_forms, prefix);  /* borrowed */
    if (admin == NULL) {
        status = PyErr_Occurred() ? -1 : 1;
        goto done;
    }
    if (!PyBytes_CheckExact(admin)) {
        PyErr_SetString(PyExc_TypeError, "admin_forms must map prefixes to bytes");
        status = -1;
        goto done;
    }
    Py_INCREF(admin);  /* the dict is the caller's: it stays alive while it is written */
    values = get(record, &f_values);
    if (values == NULL) {
        Py_DECREF(admin);
        status = -1;
        goto done;
    }
    buffer->size = 0;
    status = put_record(buffer, values, admin, now);
    Py_DECREF(admin);
    if (status) {
        goto done;
    }
    form = PyBytes_FromStringAndSize(buffer->bytes, buffer->size);
    if (form == NULL || PyList_Append(texts, text) < 0) {
        status = -1;
        goto done;
    }
    if (PyList_Append(forms, form) < 0) {
        /* Keep the two lists of one length. */
        PyList_SetSlice(texts, PyList_GET_SIZE(texts) - 1, PyList_GET_SIZE(texts), NULL);
        status = -1;
    }
done:
    Py_XDECREF(form);
    Py_XDECREF(values);
    Py_XDECREF(prefix);
    Py_DECREF(text);
    return status;
}

static PyObject *plain_forms(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *records, *admin_forms, *texts, *forms;
    Py_ssize_t start;
    long long now;
    if (!PyArg_ParseTuple(args, "O!nO!LO!O!:plain_forms", &PyList_Type, &records, &start,
                          &PyDict_Type, &admin_forms, &now, &PyList_Type, &texts,
                          &PyList_Type, &forms)) {
        return NULL;
    }
    if (start < 0) {
        PyErr_SetString(PyExc_ValueError, "start must not be negative");
        return NULL;
    }
    Buffer buffer = {NULL, 0, 0};
    Buffer tail = {NULL, 0, 0};  /* ",<now>]", the end of every value */
    Py_ssize_t position = Py_MIN(start, PyList_GET_SIZE(records));
    int status = 0;
    if (put(&tail, ",", 1) < 0 || put_int(&tail, now) < 0 || put(&tail, "]", 1) < 0) {
        status = -1;
    }
    /* The list is the caller's: its length is read again, as for the values of a record. */
    while (status == 0 && position < PyList_GET_SIZE(records)) {
        PyObject *record = PyList_GET_ITEM(records, position);
        Py_INCREF(record);
        status = take(record, admin_forms, &tail, texts, forms, &buffer);
        Py_DECREF(record);
        if (status == 0) {
            position++;
        }
    }
    PyMem_Free(buffer.bytes);
    PyMem_Free(tail.bytes);
    if (status < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(position);
}

static PyMethodDef methods[] = {
    {"plain_forms", plain_forms, METH_VARARGS,
     "plain_forms(records, start, admin_forms, now, texts, forms) -> int\n\n"
     "See registry.plain_forms.python_plain_forms: the same, compiled."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "registry._plain_forms",
    .m_doc = "The compiled registry.plain_forms.python_plain_forms.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__plain_forms(void) {
    Field *fields[] = {&f_handle, &f_values, &f_index, &f_type, &f_data, &f_ttl, &f_value};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (fields[i]->name == NULL
            && (fields[i]->name = PyUnicode_InternFromString(fields[i]->text)) == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&module);
}
