/* The DNS front end's UDP hot loop in C: see nodes/dns/udp.py.
 *
 * serve(fd, exact, now, current, misses) reads up to BATCH datagrams with one recvmmsg, answers
 * each whose bytes after the ID are a key of ``exact`` with a fresh entry, with one sendmmsg,
 * and appends every other datagram to ``misses`` as (bytes, address).  An entry is the tuple
 * (answer bytes after the ID, expires, generation key, generation) that WireCache keeps; it
 * is fresh while expires > now and current(generation key) == generation.  Returns how many
 * datagrams were read (0 when none waited).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 64
#define SLOT 65536

static unsigned char in_buf[BATCH][SLOT];
static unsigned char out_buf[BATCH][4096];
static struct sockaddr_storage names[BATCH];
static struct iovec in_iov[BATCH], out_iov[BATCH];
static struct mmsghdr in_msg[BATCH], out_msg[BATCH];

static PyObject *address(const struct sockaddr_storage *name)
{
    char host[INET6_ADDRSTRLEN];
    if (name->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)name;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, ntohs(a->sin_port));
    }
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)name;
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    return Py_BuildValue("(siII)", host, ntohs(a->sin6_port), ntohl(a->sin6_flowinfo),
                         a->sin6_scope_id);
}

/* 1 if ``entry`` is fresh, 0 if not, -1 on a Python error. */
static int fresh(PyObject *entry, double now, PyObject *current)
{
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 4)
        return 0;
    double expires = PyFloat_AsDouble(PyTuple_GET_ITEM(entry, 1));
    if (expires == -1.0 && PyErr_Occurred())
        return -1;
    if (expires <= now)
        return 0;
    PyObject *generation = PyObject_CallOneArg(current, PyTuple_GET_ITEM(entry, 2));
    if (generation == NULL)
        return -1;
    int same = PyObject_RichCompareBool(generation, PyTuple_GET_ITEM(entry, 3), Py_EQ);
    Py_DECREF(generation);
    return same;
}

static PyObject *serve(PyObject *self, PyObject *args)
{
    int fd;
    double now;
    PyObject *exact, *current, *misses;
    if (!PyArg_ParseTuple(args, "iO!dOO!", &fd, &PyDict_Type, &exact, &now, &current,
                          &PyList_Type, &misses))
        return NULL;
    for (int i = 0; i < BATCH; i++) {
        in_iov[i].iov_base = in_buf[i];
        in_iov[i].iov_len = SLOT;
        memset(&in_msg[i].msg_hdr, 0, sizeof in_msg[i].msg_hdr);
        in_msg[i].msg_hdr.msg_iov = &in_iov[i];
        in_msg[i].msg_hdr.msg_iovlen = 1;
        in_msg[i].msg_hdr.msg_name = &names[i];
        in_msg[i].msg_hdr.msg_namelen = sizeof names[i];
    }
    int got;
    got = recvmmsg(fd, in_msg, BATCH, MSG_DONTWAIT, NULL);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return PyLong_FromLong(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int answers = 0;
    for (int i = 0; i < got; i++) {
        Py_ssize_t size = in_msg[i].msg_len;
        int hit = 0;
        if (size > 12) {
            PyObject *key = PyBytes_FromStringAndSize((const char *)in_buf[i] + 2, size - 2);
            if (key == NULL)
                return NULL;
            PyObject *entry = PyDict_GetItemWithError(exact, key); /* borrowed */
            Py_DECREF(key);
            if (entry == NULL && PyErr_Occurred())
                return NULL;
            if (entry != NULL) {
                Py_INCREF(entry); /* current() runs Python code: hold the entry meanwhile */
                int ok = fresh(entry, now, current);
                if (ok < 0) {
                    Py_DECREF(entry);
                    return NULL;
                }
                PyObject *tail = ok ? PyTuple_GET_ITEM(entry, 0) : NULL;
                if (ok && PyBytes_Check(tail) && PyBytes_GET_SIZE(tail) + 2 <= 4096) {
                    Py_ssize_t length = PyBytes_GET_SIZE(tail);
                    memcpy(out_buf[answers], in_buf[i], 2);
                    memcpy(out_buf[answers] + 2, PyBytes_AS_STRING(tail), length);
                    out_iov[answers].iov_base = out_buf[answers];
                    out_iov[answers].iov_len = length + 2;
                    memset(&out_msg[answers].msg_hdr, 0, sizeof out_msg[answers].msg_hdr);
                    out_msg[answers].msg_hdr.msg_iov = &out_iov[answers];
                    out_msg[answers].msg_hdr.msg_iovlen = 1;
                    out_msg[answers].msg_hdr.msg_name = &names[i];
                    out_msg[answers].msg_hdr.msg_namelen = in_msg[i].msg_hdr.msg_namelen;
                    answers++;
                    hit = 1;
                }
                Py_DECREF(entry);
            }
        }
        if (!hit) {
            PyObject *miss = Py_BuildValue("(y#N)", in_buf[i], size, address(&names[i]));
            if (miss == NULL || PyList_Append(misses, miss) < 0) {
                Py_XDECREF(miss);
                return NULL;
            }
            Py_DECREF(miss);
        }
    }
    for (int sent = 0; sent < answers;) {
        int n;
        n = sendmmsg(fd, out_msg + sent, answers - sent, MSG_DONTWAIT);
        if (n <= 0)
            break; /* a full send buffer drops answers, as it would drop datagrams */
        sent += n;
    }
    return PyLong_FromLong(got);
}

static PyMethodDef methods[] = {
    {"serve", serve, METH_VARARGS, "Read, answer from the exact map, collect misses."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_udp", NULL, -1, methods};

PyMODINIT_FUNC PyInit__udp(void) { return PyModule_Create(&module); }
