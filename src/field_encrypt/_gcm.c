/* field_encrypt._gcm: the compiled read path. Opens the binary field tokens of many
 * documents (docs/FORMAT.md) in one call, with OpenSSL's AES-256-GCM (libcrypto EVP).
 *
 * It only ever opens what the pure-Python path (envelope.py, token.py) would open to the
 * same value: anything else (plaintext, a text token not in canonical base64, a malformed header, an unknown DEK,
 * a tag that does not verify, a type byte it does not decode itself) stops it at that
 * document and returns the document's index, and the caller opens that document with the
 * pure-Python path, which raises exactly the error it always raised. So every check of the
 * format stays in one place that the vectors pin, and this file adds no error of its own.
 *
 * Key: 32 key bytes held in C memory, cleansed when the object is freed; no repr of the key,
 * no way to read it back. One EVP_CIPHER_CTX per call; its key is set only when the DEK
 * changes from one token to the next, and the context (with its key schedule) is cleansed
 * and freed before the call returns. The GIL is held throughout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define KEY_SIZE 32
#define DEK_ID_SIZE 16
#define NONCE_SIZE 12
#define TAG_SIZE 16
#define VERSION 0x01
#define TYPE_STR 0x73
#define TYPE_BYTES 0x62
/* version, dekId, len(mekVersion), one byte of mekVersion, nonce, tag, the type byte */
#define MIN_SIZE (1 + DEK_ID_SIZE + 1 + 1 + NONCE_SIZE + TAG_SIZE + 1)

typedef struct {
    PyObject_HEAD
    unsigned char key[KEY_SIZE];
} KeyObject;

static PyTypeObject KeyType;
static EVP_CIPHER *aes_256_gcm; /* fetched once, at import */

static PyObject *
Key_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_buffer key;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Key() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*:Key", &key)) {
        return NULL;
    }
    if (key.len != KEY_SIZE) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "AES-256-GCM needs a 32-byte key");
        return NULL;
    }
    KeyObject *self = (KeyObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        memcpy(self->key, key.buf, KEY_SIZE);
    }
    PyBuffer_Release(&key);
    return (PyObject *)self;
}

static void
Key_dealloc(KeyObject *self)
{
    OPENSSL_cleanse(self->key, KEY_SIZE);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Key_reduce(PyObject *self, PyObject *unused)
{
    PyErr_SetString(PyExc_TypeError, "a Key cannot be pickled or copied");
    return NULL;
}

static PyMethodDef Key_methods[] = {
    {"__reduce__", Key_reduce, METH_NOARGS, NULL},
    {"__reduce_ex__", (PyCFunction)(void (*)(void))Key_reduce, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject KeyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "field_encrypt._gcm.Key",
    .tp_doc = PyDoc_STR("Key(key: bytes): a 32-byte AES-256-GCM key for open_documents."),
    .tp_basicsize = sizeof(KeyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Key_new,
    .tp_dealloc = (destructor)Key_dealloc,
    .tp_methods = Key_methods,
};

/* A growable scratch buffer. */
typedef struct {
    unsigned char *data;
    size_t size;
} Buffer;

static int
buffer_reserve(Buffer *buf, size_t size)
{
    if (size <= buf->size) {
        return 0;
    }
    unsigned char *data = PyMem_Malloc(size);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (buf->data != NULL) {
        OPENSSL_cleanse(buf->data, buf->size);
        PyMem_Free(buf->data);
    }
    buf->data = data;
    buf->size = size;
    return 0;
}

static void
buffer_free(Buffer *buf)
{
    if (buf->data != NULL) {
        OPENSSL_cleanse(buf->data, buf->size);
        PyMem_Free(buf->data);
        buf->data = NULL;
        buf->size = 0;
    }
}

/* What opening one field came to. */
enum { OPENED, SKIPPED, STOP, FAILED };

typedef struct {
    EVP_CIPHER_CTX *ctx;
    PyObject *key_of;     /* dekId (bytes) -> Key | None */
    PyObject *decode;     /* typed plaintext (bytes) -> value, for type bytes other than str */
    PyObject *key;        /* the Key set on ctx (a strong reference), or NULL */
    unsigned char dek_id[DEK_ID_SIZE];
    Buffer aad;
    Buffer plaintext;
    Buffer decoded; /* a text token's binary form */
} Opener;

/* The key of ``dek_id`` on the context: set only when it differs from the last one. */
static int
use_key(Opener *op, const unsigned char *dek_id, const unsigned char *nonce)
{
    if (op->key != NULL && memcmp(op->dek_id, dek_id, DEK_ID_SIZE) == 0) {
        return EVP_DecryptInit_ex(op->ctx, NULL, NULL, NULL, nonce) == 1 ? OPENED : FAILED;
    }
    PyObject *raw_id = PyBytes_FromStringAndSize((const char *)dek_id, DEK_ID_SIZE);
    if (raw_id == NULL) {
        return FAILED;
    }
    if (op->ctx == NULL) {
        op->ctx = EVP_CIPHER_CTX_new();
        if (op->ctx == NULL
            || EVP_DecryptInit_ex(op->ctx, aes_256_gcm, NULL, NULL, NULL) != 1) {
            Py_DECREF(raw_id);
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-256-GCM");
            return FAILED;
        }
    }
    PyObject *key = PyObject_CallOneArg(op->key_of, raw_id);
    Py_DECREF(raw_id);
    if (key == NULL) {
        return FAILED;
    }
    if (key == Py_None) {
        Py_DECREF(key);
        return STOP;
    }
    if (!PyObject_TypeCheck(key, &KeyType)) {
        Py_DECREF(key);
        PyErr_SetString(PyExc_TypeError, "key_of must return a Key or None");
        return FAILED;
    }
    Py_XSETREF(op->key, key);
    memcpy(op->dek_id, dek_id, DEK_ID_SIZE);
    if (EVP_DecryptInit_ex(op->ctx, NULL, NULL, ((KeyObject *)key)->key, nonce) != 1) {
        Py_CLEAR(op->key);
        return FAILED;
    }
    return OPENED;
}

static signed char b64_index[256];

static void
b64_index_init(void)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(b64_index, -1, sizeof(b64_index));
    for (int i = 0; i < 64; i++) {
        b64_index[(unsigned char)alphabet[i]] = (signed char)i;
    }
}

/* The binary form of text token ``value`` ("fe1:" + base64) in op->decoded, or STOP for
 * anything but the canonical encoding of the standard alphabet (the pure-Python path then
 * says what is wrong: token.from_text). */
static int
decode_text(Opener *op, PyObject *value, const unsigned char **raw, Py_ssize_t *len)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(value) < 0) {
        return FAILED;
    }
#endif
    if (!PyUnicode_IS_ASCII(value)) {
        return STOP;
    }
    const unsigned char *text = PyUnicode_1BYTE_DATA(value);
    Py_ssize_t n = PyUnicode_GET_LENGTH(value) - 4;
    if (n <= 0 || n % 4 != 0 || memcmp(text, "fe1:", 4) != 0) {
        return STOP;
    }
    text += 4;
    Py_ssize_t pad = text[n - 1] == '=' ? (text[n - 2] == '=' ? 2 : 1) : 0;
    if (buffer_reserve(&op->decoded, (size_t)(n / 4 * 3)) < 0) {
        return FAILED;
    }
    unsigned char *out = op->decoded.data;
    Py_ssize_t o = 0;
    for (Py_ssize_t i = 0; i < n; i += 4) {
        int last = i + 4 == n;
        int a = b64_index[text[i]], b = b64_index[text[i + 1]];
        int c = last && pad == 2 ? 0 : b64_index[text[i + 2]];
        int d = last && pad >= 1 ? 0 : b64_index[text[i + 3]];
        if ((a | b | c | d) < 0) {
            return STOP; /* outside the alphabet, or '=' before the end */
        }
        unsigned int quad = (unsigned int)(a << 18 | b << 12 | c << 6 | d);
        out[o++] = (unsigned char)(quad >> 16);
        if (last && pad == 2) {
            if (b & 0x0F) {
                return STOP; /* unused bits set: not the canonical encoding */
            }
            break;
        }
        out[o++] = (unsigned char)(quad >> 8);
        if (last && pad == 1) {
            if (c & 0x03) {
                return STOP;
            }
            break;
        }
        out[o++] = (unsigned char)quad;
    }
    *raw = out;
    *len = o;
    return OPENED;
}

/* Open one token ``value`` (binary, or its text form) bound to ``prefix`` (product,
 * collection), the document id and ``binding`` (field path); on OPENED, ``*out`` is the new
 * value (a new reference). */
static int
open_token(Opener *op, PyObject *value, const char *prefix, Py_ssize_t prefix_len,
           const char *doc_id, Py_ssize_t doc_id_len, const char *binding,
           Py_ssize_t binding_len, PyObject **out)
{
    const unsigned char *raw;
    Py_ssize_t len;
    if (PyBytes_CheckExact(value)) {
        raw = (const unsigned char *)PyBytes_AS_STRING(value);
        len = PyBytes_GET_SIZE(value);
    }
    else if (PyUnicode_CheckExact(value)) {
        int status = decode_text(op, value, &raw, &len);
        if (status != OPENED) {
            return status;
        }
    }
    else {
        return STOP; /* plaintext of another type: the pure-Python path */
    }
    if (len < MIN_SIZE || raw[0] != VERSION || raw[17] == 0) {
        return STOP;
    }
    Py_ssize_t end = 18 + raw[17]; /* the header: version through mekVersion */
    if (len < end + NONCE_SIZE + TAG_SIZE + 1) {
        return STOP;
    }
    const unsigned char *nonce = raw + end;
    const unsigned char *ciphertext = nonce + NONCE_SIZE;
    Py_ssize_t ct_len = len - end - NONCE_SIZE - TAG_SIZE;
    if (ct_len > INT_MAX) {
        return STOP;
    }

    int status = use_key(op, raw + 1, nonce);
    if (status != OPENED) {
        return status;
    }

    /* associated data: header | product, collection | len(document id), document id | path */
    size_t aad_len = (size_t)end + prefix_len + 2 + doc_id_len + binding_len;
    if (aad_len > INT_MAX || buffer_reserve(&op->aad, aad_len) < 0) {
        return aad_len > INT_MAX ? STOP : FAILED;
    }
    unsigned char *a = op->aad.data;
    memcpy(a, raw, end);
    a += end;
    memcpy(a, prefix, prefix_len);
    a += prefix_len;
    *a++ = (unsigned char)(doc_id_len >> 8);
    *a++ = (unsigned char)(doc_id_len & 0xFF);
    memcpy(a, doc_id, doc_id_len);
    a += doc_id_len;
    memcpy(a, binding, binding_len);

    if (buffer_reserve(&op->plaintext, (size_t)ct_len + 16) < 0) {
        return FAILED;
    }
    unsigned char *pt = op->plaintext.data;
    int n = 0, tail = 0;
    if (EVP_DecryptUpdate(op->ctx, NULL, &n, op->aad.data, (int)aad_len) != 1
        || EVP_DecryptUpdate(op->ctx, pt, &n, ciphertext, (int)ct_len) != 1
        || EVP_CIPHER_CTX_ctrl(op->ctx, EVP_CTRL_GCM_SET_TAG, TAG_SIZE,
                               (void *)(raw + len - TAG_SIZE)) != 1
        || EVP_DecryptFinal_ex(op->ctx, pt + n, &tail) != 1) {
        /* a tag that does not verify: the pure-Python path raises DecryptionError */
        OPENSSL_cleanse(pt, (size_t)ct_len);
        return STOP;
    }
    Py_ssize_t pt_len = n + tail;

    PyObject *result;
    if (pt[0] == TYPE_STR) {
        result = PyUnicode_DecodeUTF8((const char *)pt + 1, pt_len - 1, NULL);
    }
    else if (pt[0] == TYPE_BYTES) {
        result = PyBytes_FromStringAndSize((const char *)pt + 1, pt_len - 1);
    }
    else {
        PyObject *typed = PyBytes_FromStringAndSize((const char *)pt, pt_len);
        result = typed == NULL ? NULL : PyObject_CallOneArg(op->decode, typed);
        Py_XDECREF(typed);
    }
    OPENSSL_cleanse(pt, (size_t)pt_len);
    if (result == NULL) {
        /* a value that does not decode: the pure-Python path raises what it raises */
        if (PyErr_ExceptionMatches(PyExc_Exception)) {
            PyErr_Clear();
            return STOP;
        }
        return FAILED;
    }
    *out = result;
    return OPENED;
}

PyDoc_STRVAR(open_documents_doc,
"open_documents(documents, document_ids, prefix, fields, key_of, decode, start, /) -> int\n\n"
"Open, in place, the binary tokens of ``documents[start:]`` (dicts: the caller's copies).\n"
"``prefix``: the length-prefixed product and collection; ``fields``: (name, length-prefixed\n"
"path) of each top-level encrypted field; ``key_of(dekId)``: its Key, or None; ``decode``:\n"
"a typed plaintext other than text or bytes to its value. Returns the index of the first\n"
"document it did not open entirely (len(documents) when it opened all); that document's\n"
"fields may be partly replaced, so the caller opens it again from its original.");

static PyObject *
open_documents(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "open_documents takes 7 positional arguments");
        return NULL;
    }
    PyObject *documents = args[0], *ids = args[1], *prefix = args[2], *fields = args[3];
    if (!PyList_CheckExact(documents) || !PyList_CheckExact(ids) || !PyBytes_CheckExact(prefix)
        || !PyTuple_CheckExact(fields)) {
        PyErr_SetString(PyExc_TypeError,
                        "open_documents(list, list, bytes, tuple, key_of, decode, int)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[6]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(documents);
    if (PyList_GET_SIZE(ids) != count || start < 0) {
        PyErr_SetString(PyExc_ValueError, "one document id per document, and start >= 0");
        return NULL;
    }
    Py_ssize_t nfields = PyTuple_GET_SIZE(fields);
    for (Py_ssize_t j = 0; j < nfields; j++) {
        PyObject *f = PyTuple_GET_ITEM(fields, j);
        if (!PyTuple_CheckExact(f) || PyTuple_GET_SIZE(f) != 2
            || !PyUnicode_CheckExact(PyTuple_GET_ITEM(f, 0))
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(f, 1))) {
            PyErr_SetString(PyExc_TypeError, "fields must be (str, bytes) pairs");
            return NULL;
        }
    }

    Opener op = {.key_of = args[4], .decode = args[5]}; /* ctx: made at the first token */
    /* the prefix cannot change under us: it is a bytes object we hold through the call */
    const char *prefix_data = PyBytes_AS_STRING(prefix);
    Py_ssize_t prefix_len = PyBytes_GET_SIZE(prefix);

    Py_ssize_t i = start;
    int failed = 0;
    for (; i < count; i++) {
        PyObject *doc = PyList_GET_ITEM(documents, i);
        PyObject *doc_id = PyList_GET_ITEM(ids, i);
        if (!PyDict_CheckExact(doc) || !PyUnicode_CheckExact(doc_id)) {
            break;
        }
        Py_INCREF(doc);
        Py_INCREF(doc_id);
        Py_ssize_t id_len;
        const char *id_data = PyUnicode_AsUTF8AndSize(doc_id, &id_len);
        int status = OPENED;
        if (id_data == NULL || id_len > 0xFFFF) {
            PyErr_Clear(); /* an id the binding cannot hold: the pure-Python path says so */
            status = STOP;
        }
        for (Py_ssize_t j = 0; status != STOP && j < nfields; j++) {
            PyObject *f = PyTuple_GET_ITEM(fields, j);
            PyObject *name = PyTuple_GET_ITEM(f, 0), *binding = PyTuple_GET_ITEM(f, 1);
            PyObject *value = PyDict_GetItemWithError(doc, name);
            if (value == NULL) {
                if (PyErr_Occurred()) {
                    status = FAILED;
                    break;
                }
                continue; /* absent: left as it is */
            }
            if (value == Py_None) {
                continue;
            }
            Py_INCREF(value);
            PyObject *opened = NULL;
            status = open_token(&op, value, prefix_data, prefix_len, id_data, id_len,
                                PyBytes_AS_STRING(binding), PyBytes_GET_SIZE(binding), &opened);
            Py_DECREF(value);
            if (status == OPENED) {
                int set = PyDict_SetItem(doc, name, opened);
                Py_DECREF(opened);
                if (set < 0) {
                    status = FAILED;
                }
            }
            if (status == FAILED) {
                break;
            }
        }
        Py_DECREF(doc);
        Py_DECREF(doc_id);
        if (status == FAILED) {
            failed = 1;
            break;
        }
        if (status == STOP) {
            break;
        }
    }

    EVP_CIPHER_CTX_free(op.ctx); /* cleanses the key schedule (NULL: nothing to free) */
    Py_XDECREF(op.key);
    buffer_free(&op.aad);
    buffer_free(&op.plaintext);
    buffer_free(&op.decoded);
    if (failed) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed while opening a field token");
        }
        return NULL;
    }
    return PyLong_FromSsize_t(i);
}

static PyMethodDef module_methods[] = {
    {"open_documents", (PyCFunction)(void (*)(void))open_documents, METH_FASTCALL,
     open_documents_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "field_encrypt._gcm",
    .m_doc = PyDoc_STR("The compiled read path: many binary field tokens opened in one call."),
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__gcm(void)
{
    if (aes_256_gcm == NULL) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
        aes_256_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
#else
        aes_256_gcm = (EVP_CIPHER *)EVP_aes_256_gcm();
#endif
        if (aes_256_gcm == NULL) {
            PyErr_SetString(PyExc_ImportError, "OpenSSL has no AES-256-GCM");
            return NULL;
        }
    }
    b64_index_init();
    if (PyType_Ready(&KeyType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Key", (PyObject *)&KeyType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
