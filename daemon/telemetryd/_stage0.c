/* The hot path's cache key in C: typed_values.key_py for ASCII text, the same bytes.
 *
 * typed_values.py is the definition; this file mirrors it step for step, for ASCII text only (any
 * other text goes to the Python function given to configure()). tests/test_stage0.py checks the two
 * against each other on generated and real texts. Change both together.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include "structmember.h"

static PyObject *fallback = NULL;

/* Word lists as configure() hands them over from typed_values (its one copy of them): GTLDS,
 * NOT_TLDS, FILE_EXTS (lower case), SENSITIVE (the words a plan never blanks), the HTTP methods and the
 * month and weekday names (_CALENDAR). */
typedef struct {
    char **words;
    Py_ssize_t n;
    Py_ssize_t maxlen;
    unsigned char first[256]; /* first[c]: some word starts with c */
    unsigned long long lens;  /* bit l: some word has length l (l < 64) */
} wordlist;
static wordlist gtlds, not_tlds, file_exts, sensitive, http_methods, calendar;
static Py_ssize_t max_chars = 1024;
static Py_ssize_t max_tokens = 64;

#define MAXTOK 256


/* Character types as bits of one table (filled by init_classes): one load per test. */
enum { T_DIGIT = 1, T_LOWER = 2, T_UPPER = 4, T_HEXLETTER = 8, T_SPACE = 16, T_UNDERSCORE = 32, T_NAMEMARK = 64 };
static unsigned char ctype[256];

static inline int is_digit(unsigned char c) { return ctype[c] & T_DIGIT; }
static inline int is_lower(unsigned char c) { return ctype[c] & T_LOWER; }
static inline int is_upper(unsigned char c) { return ctype[c] & T_UPPER; }
static inline int is_alpha(unsigned char c) { return ctype[c] & (T_LOWER | T_UPPER); }
static inline int is_alnum(unsigned char c) { return ctype[c] & (T_DIGIT | T_LOWER | T_UPPER); }
static inline int is_w(unsigned char c) { return ctype[c] & (T_DIGIT | T_LOWER | T_UPPER | T_UNDERSCORE); }
static inline int is_hex(unsigned char c) { return ctype[c] & (T_DIGIT | T_HEXLETTER); }
/* \s under re.ASCII, and bytes.split() */
static inline int is_space(unsigned char c) { return ctype[c] & T_SPACE; }

/* Character classes as bits of one table (filled by init_classes), for the lookbehind and lookahead
 * sets of typed_values._STAGE0. */
enum {
    C_W = 1,      /* [A-Za-z0-9_] */
    C_DOT = 2,
    C_COLON = 4,
    C_SLASH = 8,
    C_AT = 16,
    C_DASH = 32,
    C_PLUS = 64,
    C_SEGX = 128, /* not in a path segment: \s and /:,;'"()[]{}<>|= */
};
static unsigned char cls[256];

static void init_classes(void) {
    for (int c = 0; c < 256; c++) {
        unsigned char t = 0;
        if (c >= '0' && c <= '9') t |= T_DIGIT;
        if (c >= 'a' && c <= 'z') t |= T_LOWER;
        if (c >= 'A' && c <= 'Z') t |= T_UPPER;
        if ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) t |= T_HEXLETTER;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c') t |= T_SPACE;
        if (c == '_') t |= T_UNDERSCORE;
        if (c == '_' || c == '.' || c == '-') t |= T_NAMEMARK; /* the marks a blankable name may hold */
        ctype[c] = t;
    }
    for (int c = 0; c < 256; c++) {
        unsigned char b = 0;
        if (is_w((unsigned char)c)) b |= C_W;
        if (c == '.') b |= C_DOT;
        if (c == ':') b |= C_COLON;
        if (c == '/') b |= C_SLASH;
        if (c == '@') b |= C_AT;
        if (c == '-') b |= C_DASH;
        if (c == '+') b |= C_PLUS;
        if (is_space((unsigned char)c) || (c != 0 && strchr("/:,;'\"()[]{}<>|=", c) != NULL)) b |= C_SEGX;
        cls[c] = b;
    }
}

#define ANY(c, mask) ((cls[(unsigned char)(c)] & (mask)) != 0)
static inline int prev_is(const unsigned char *s, Py_ssize_t i, unsigned char mask) {
    return i > 0 && ANY(s[i - 1], mask);
}

/* d[0:n] = s[0:n] for the short runs copied on the hot path, where a call to memcpy costs more than the
 * copy: eight bytes at a time, the last eight overlapping the ones before; reads and writes stay inside
 * the two ranges, which do not overlap each other. */
static inline void copy_run(void *dst, const void *src, Py_ssize_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (n > 64) {
        memcpy(d, s, (size_t)n);
    } else if (n >= 8) {
        unsigned long long v;
        for (Py_ssize_t k = 0; k + 8 < n; k += 8) {
            memcpy(&v, s + k, 8);
            memcpy(d + k, &v, 8);
        }
        memcpy(&v, s + n - 8, 8);
        memcpy(d + n - 8, &v, 8);
    } else if (n >= 4) {
        unsigned int a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else {
        for (Py_ssize_t k = 0; k < n; k++) d[k] = s[k];
    }
}

/* a[0:n] == b[0:n], for the same short runs: as copy_run reads them */
static inline int same_run(const void *pa, const void *pb, Py_ssize_t n) {
    const unsigned char *a = pa, *b = pb;
    if (n > 64) return memcmp(a, b, (size_t)n) == 0;
    if (n >= 8) {
        unsigned long long x, y;
        for (Py_ssize_t k = 0; k + 8 < n; k += 8) {
            memcpy(&x, a + k, 8);
            memcpy(&y, b + k, 8);
            if (x != y) return 0;
        }
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        unsigned int x0, x1, y0, y1;
        memcpy(&x0, a, 4);
        memcpy(&x1, a + n - 4, 4);
        memcpy(&y0, b, 4);
        memcpy(&y1, b + n - 4, 4);
        return x0 == y0 && x1 == y1;
    }
    for (Py_ssize_t k = 0; k < n; k++)
        if (a[k] != b[k]) return 0;
    return 1;
}

/* --- the alternatives: each returns the end of its match at i, or -1; *keep says the match stays ---- */

static Py_ssize_t m_quoted(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, int *keep) {
    if (s[i] != '"') return -1;
    const unsigned char *q = memchr(s + i + 1, '"', (size_t)(n - i - 1));
    if (q == NULL) return -1;
    Py_ssize_t end = (q - s) + 1;
    *keep = 0;
    for (Py_ssize_t w = 0; w < http_methods.n; w++) {
        const char *m = http_methods.words[w];
        size_t l = strlen(m);
        if ((Py_ssize_t)(i + 1 + l + 1) <= n && memcmp(s + i + 1, m, l) == 0 && s[i + 1 + l] == ' ') {
            *keep = 1;
            break;
        }
    }
    return end;
}

static Py_ssize_t m_uuid(const unsigned char *s, Py_ssize_t n, Py_ssize_t i) {
    static const int groups[] = {8, 4, 4, 4, 12};
    if (prev_is(s, i, C_W)) return -1;
    Py_ssize_t j = i;
    for (int g = 0; g < 5; g++) {
        if (g > 0) {
            if (j >= n || s[j] != '-') return -1;
            j++;
        }
        for (int k = 0; k < groups[g]; k++, j++)
            if (j >= n || !is_hex(s[j])) return -1;
    }
    if (j < n && is_w(s[j])) return -1;
    return j;
}

static Py_ssize_t hex_run(const unsigned char *s, Py_ssize_t n, Py_ssize_t j) {
    Py_ssize_t k = j;
    while (k < n && is_hex(s[k])) k++;
    return k - j;
}

static Py_ssize_t m_ipv6(const unsigned char *s, Py_ssize_t n, Py_ssize_t i) {
    if (prev_is(s, i, C_W | C_COLON)) return -1;
    Py_ssize_t j = i;
    int groups = 0;
    while (groups < 15) {
        Py_ssize_t l = hex_run(s, n, j);
        if (l < 1 || l > 4 || j + l >= n || s[j + l] != ':') break;
        j += l + 1;
        groups++;
    }
    if (groups < 3) return -1;
    Py_ssize_t l = hex_run(s, n, j);
    if (l < 1 || l > 4) return -1;
    j += l;
    if (j < n && ANY(s[j], C_W | C_COLON)) return -1;
    return j;
}

static Py_ssize_t m_email(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, Py_ssize_t *keep_from) {
    if (prev_is(s, i, C_W | C_DOT | C_PLUS | C_SLASH | C_COLON | C_AT | C_DASH)) return -1;
    Py_ssize_t j = i;
    while (j < n && ANY(s[j], C_W | C_DOT | C_PLUS | C_DASH)) j++;
    if (j == i || j >= n || s[j] != '@') return -1;
    Py_ssize_t d = ++j;
    while (j < n && (is_alnum(s[j]) || s[j] == '.' || s[j] == '-')) j++;
    if (j == d) return -1;
    if (j < n && (is_w(s[j]) || s[j] == '@' || s[j] == '+')) return -1;
    /* the check: strip trailing . and -, then 2+ labels, none empty, the last 2+ letters */
    Py_ssize_t core_end = j;
    while (core_end > d && (s[core_end - 1] == '.' || s[core_end - 1] == '-')) core_end--;
    int labels = 1;
    Py_ssize_t last = d;
    int ok = core_end > d;
    for (Py_ssize_t k = d; ok && k < core_end; k++) {
        if (s[k] == '.') {
            if (k == last) ok = 0;
            labels++;
            last = k + 1;
        }
    }
    if (ok && (core_end == last || labels < 2)) ok = 0;
    if (ok) {
        if (core_end - last < 2) ok = 0;
        for (Py_ssize_t k = last; ok && k < core_end; k++)
            if (!is_alpha(s[k])) ok = 0;
    }
    *keep_from = ok ? core_end : -1;  /* replaced: s[i:core_end]; kept: the stripped tail */
    return j;
}

static inline int seg_char(unsigned char c) { return !ANY(c, C_SEGX); }

static Py_ssize_t m_path(const unsigned char *s, Py_ssize_t n, Py_ssize_t i) {
    if (prev_is(s, i, C_W | C_DOT | C_SLASH | C_COLON | C_DASH)) return -1;
    Py_ssize_t j = i;
    if (s[j] == '.') {
        if (j + 1 < n && s[j + 1] == '/') j += 1;
        else if (j + 2 < n && s[j + 1] == '.' && s[j + 2] == '/') j += 2;
        else return -1;
    }
    int iters = 0;
    for (;;) {
        Py_ssize_t k = j;
        while (k < n && s[k] == '/') k++;
        if (k == j) break;
        Py_ssize_t m = k;
        while (m < n && seg_char(s[m])) m++;
        if (m == k) break;
        j = m;
        iters++;
    }
    if (iters == 0) return -1;
    if (j < n && s[j] == '/') j++;
    return j;
}

static inline int rel_char(unsigned char c) { return is_w(c) || c == '.' || c == '-'; }
static Py_ssize_t m_relpath_match(const unsigned char *s, Py_ssize_t n, Py_ssize_t i);

static Py_ssize_t m_relpath(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, int *keep) {
    Py_ssize_t end = m_relpath_match(s, n, i);
    if (end < 0) return -1;
    /* typed_values._relpath: a digit, or a part of 8+ hex digits */
    *keep = 1;
    Py_ssize_t part = i;
    int all_hex = 1;
    for (Py_ssize_t k = i; k <= end; k++) {
        if (k == end || s[k] == '/') {
            if (all_hex && k - part >= 8) *keep = 0;
            part = k + 1;
            all_hex = 1;
        } else {
            if (is_digit(s[k])) *keep = 0;
            if (!is_hex(s[k])) all_hex = 0;
        }
    }
    return end;
}

static Py_ssize_t m_relpath_match(const unsigned char *s, Py_ssize_t n, Py_ssize_t i) {
    if (prev_is(s, i, C_W | C_DOT | C_COLON | C_SLASH | C_AT | C_DASH)) return -1;
    Py_ssize_t j = i;
    while (j < n && rel_char(s[j])) j++;
    if (j == i) return -1;
    int iters = 0;
    while (j < n && s[j] == '/') {
        Py_ssize_t k = j + 1;
        while (k < n && rel_char(s[k])) k++;
        if (k == j + 1) break;
        j = k;
        iters++;
    }
    if (iters < 2) return -1;
    if (j < n && s[j] == '/') {
        if (!(j + 1 < n && ANY(s[j + 1], C_W | C_DOT | C_COLON | C_SLASH | C_AT | C_DASH))) return j + 1;
    }
    if (j < n && ANY(s[j], C_W | C_DOT | C_COLON | C_SLASH | C_AT | C_DASH)) return -1;
    return j;
}

static int char_class(unsigned char c) { return is_lower(c) ? 0 : is_upper(c) ? 1 : 2; }

/* typed_values.random_id on s[a:b] (no underscore in it) */
static int random_id(const unsigned char *s, Py_ssize_t a, Py_ssize_t b) {
    Py_ssize_t n = b - a;
    if (n < 12) return 0;
    int lower = 0, upper = 0;
    for (Py_ssize_t k = a; k < b; k++) {
        if (!is_alnum(s[k])) return 0;
        lower |= is_lower(s[k]);
        upper |= is_upper(s[k]);
    }
    if (!(lower && upper)) return 0; /* str.islower()/isupper(): all cased chars of one case */
    Py_ssize_t changes = 0;
    for (Py_ssize_t k = a + 1; k < b; k++)
        if (char_class(s[k]) != char_class(s[k - 1])) changes++;
    return changes * 3 >= n;
}

static int word_is_id(const unsigned char *s, Py_ssize_t n, Py_ssize_t a, Py_ssize_t b) {
    int digits = 0, letters = 0, underscores = 0;
    for (Py_ssize_t k = a; k < b; k++) {
        if (is_digit(s[k])) digits++;
        else if (is_alpha(s[k])) letters++;
        else underscores++;
    }
    if (digits >= 2 && letters) return 1;
    if (b < n && s[b] == '=') return 0;
    if (digits == 0 && underscores == 0) return 0; /* str.isalpha() */
    /* any part between underscores a random id */
    Py_ssize_t start = a;
    for (Py_ssize_t k = a; k <= b; k++) {
        if (k == b || s[k] == '_') {
            if (random_id(s, start, k)) return 1;
            start = k + 1;
        }
    }
    /* prefixed_id: head_tail, head not empty, tail 16+ letters of both cases */
    Py_ssize_t us = -1;
    for (Py_ssize_t k = b - 1; k >= a; k--)
        if (s[k] == '_') {
            us = k;
            break;
        }
    if (us <= a) return 0;
    if (b - (us + 1) < 16) return 0;
    int lo = 0, up = 0;
    for (Py_ssize_t k = us + 1; k < b; k++) {
        if (!is_alpha(s[k])) return 0;
        lo |= is_lower(s[k]);
        up |= is_upper(s[k]);
    }
    return lo && up;
}

static Py_ssize_t m_word(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, int *keep) {
    if (prev_is(s, i, C_W | C_DOT | C_COLON | C_SLASH | C_AT | C_DASH)) return -1;
    Py_ssize_t j = i;
    while (j < n && is_w(s[j])) j++;
    if (j - i < 10) return -1;
    if (j < n && ANY(s[j], C_W | C_DOT | C_COLON | C_SLASH | C_AT | C_DASH)) return -1;
    *keep = !word_is_id(s, n, i, j);
    return j;
}

static inline int lower_alnum(unsigned char c) { return is_lower(c) || is_digit(c); }

static Py_ssize_t m_dashed(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, int *keep) {
    if (prev_is(s, i, C_W | C_DOT | C_DASH)) return -1;
    Py_ssize_t j = i;
    while (j < n && lower_alnum(s[j])) j++;
    if (j == i) return -1;
    int iters = 0;
    Py_ssize_t prev_start = i, last_start = i;
    while (j < n && s[j] == '-') {
        Py_ssize_t k = j + 1;
        while (k < n && lower_alnum(s[k])) k++;
        if (k == j + 1) break;
        prev_start = last_start;
        last_start = j + 1;
        j = k;
        iters++;
    }
    if (iters < 2) return -1;
    if (j < n && ANY(s[j], C_W | C_DOT | C_DASH)) return -1;
    /* _pod: the second-to-last part 6-10 lower-case hex digits, the last 5 characters */
    Py_ssize_t hash_len = (last_start - 1) - prev_start;
    int pod = hash_len >= 6 && hash_len <= 10 && (j - last_start) == 5;
    for (Py_ssize_t k = prev_start; pod && k < last_start - 1; k++)
        if (!(is_digit(s[k]) || (s[k] >= 'a' && s[k] <= 'f'))) pod = 0;
    *keep = !pod;
    return j;
}

static int in_words(const wordlist *w, const unsigned char *t, Py_ssize_t len) {
    if (len <= 0 || len >= 64 || !(w->lens >> len & 1) || !w->first[t[0]]) return 0;
    for (Py_ssize_t k = 0; k < w->n; k++)
        if (w->words[k][0] == (char)t[0] && (Py_ssize_t)strlen(w->words[k]) == len &&
            memcmp(w->words[k], t, (size_t)len) == 0)
            return 1;
    return 0;
}

/* typed_values.is_hostname on s[a:b] (ASCII letters, digits, '-' and '.') */
static int is_hostname(const unsigned char *s, Py_ssize_t a, Py_ssize_t b) {
    int labels = 1;
    Py_ssize_t last = a;
    for (Py_ssize_t k = a; k < b; k++) {
        if (s[k] == '.') {
            if (k == last) return 0;
            labels++;
            last = k + 1;
        }
    }
    if (last == b || labels < 2) return 0;
    unsigned char tld[64];
    Py_ssize_t len = b - last;
    if (len > (Py_ssize_t)sizeof(tld)) return 0; /* longer than any listed ending, and not 2 */
    for (Py_ssize_t k = 0; k < len; k++) tld[k] = is_upper(s[last + k]) ? (unsigned char)(s[last + k] + 32) : s[last + k];
    if (in_words(&gtlds, tld, len)) return 1;
    if (len != 2 || !is_alpha(tld[0]) || !is_alpha(tld[1]) || in_words(&not_tlds, tld, len)) return 0;
    return labels >= 3 || !in_words(&file_exts, tld, len);
}

static inline int label_char(unsigned char c) { return is_alnum(c) || c == '-'; }

static Py_ssize_t m_host(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, int *keep) {
    if (prev_is(s, i, C_W | C_DOT | C_AT | C_SLASH | C_COLON | C_DASH)) return -1;
    if (!is_alnum(s[i])) return -1;
    Py_ssize_t j = i + 1;
    while (j < n && label_char(s[j])) j++;
    int labels = 0;
    while (j + 1 < n && s[j] == '.' && label_char(s[j + 1])) {
        j++;
        while (j < n && label_char(s[j])) j++;
        labels++;
    }
    if (labels == 0) return -1;
    if (j < n && (is_w(s[j]) || s[j] == '@' || s[j] == '/' || s[j] == '=' || s[j] == '-')) return -1;
    *keep = !is_hostname(s, i, j);
    return j;
}

/* stage 0 of s[0:n] into out (room for 2n+16); returns the length written. Each alternative needs a
 * character of its own in its match ('"', '-' or ':', '@', '/'): a text without it skips the
 * alternative; and only '"' may start a match right after a word character. */
static Py_ssize_t stage0(const unsigned char *s, Py_ssize_t n, unsigned char *out) {
    const int has_quote = memchr(s, '"', (size_t)n) != NULL;
    const int has_dash = memchr(s, '-', (size_t)n) != NULL;
    const int has_colon = memchr(s, ':', (size_t)n) != NULL;
    const int has_at = memchr(s, '@', (size_t)n) != NULL;
    const int has_slash = memchr(s, '/', (size_t)n) != NULL;
    const int has_dot = memchr(s, '.', (size_t)n) != NULL;
    Py_ssize_t i = 0, o = 0;
    while (i < n) {
        int keep = 0;
        Py_ssize_t keep_from = -1;
        Py_ssize_t end = -1;
        Py_ssize_t word_end = i + 1; /* past the word character run at i, when c starts one */
        unsigned char c = s[i];
        if (c == '"') {
            if (has_quote) end = m_quoted(s, n, i, &keep);
        } else if (i > 0 && is_w(s[i - 1])) {
            /* every other alternative starts where no word character precedes */
            out[o++] = c;
            i++;
            continue;
        } else if (is_w(c)) {
            /* A word shorter than 10 followed by none of . : / @ - + starts no match: a UUID, an IPv6
             * group, an email's local part, a relative path and a dashed name each need one of those
             * right after their first word, and an id 10 word characters. Copy it whole. */
            Py_ssize_t e = i + 1;
            while (e < n && is_w(s[e])) e++;
            if (e - i < 10 && (e == n || !ANY(s[e], C_DOT | C_COLON | C_SLASH | C_AT | C_DASH | C_PLUS))) {
                /* and the character after it, which a word character precedes: only a '"' starts a match
                 * there */
                if (e < n && s[e] != '"') e++;
                copy_run(out + o, s + i, e - i);
                o += e - i;
                i = e;
                continue;
            }
            word_end = e;
        }
        if (end < 0 && is_hex(c)) {
            if (has_dash) end = m_uuid(s, n, i);
            if (end < 0 && has_colon) end = m_ipv6(s, n, i);
            keep = 0;
        }
        if (end < 0 && has_at && (is_w(c) || c == '.' || c == '+' || c == '-')) {
            end = m_email(s, n, i, &keep_from);
            if (end >= 0) {
                if (keep_from < 0) {
                    copy_run(out + o, s + i, end - i);
                    o += end - i;
                } else {
                    memcpy(out + o, "<*>", 3);
                    o += 3;
                    copy_run(out + o, s + keep_from, end - keep_from);
                    o += end - keep_from;
                }
                i = end;
                continue;
            }
        }
        if (end < 0 && has_slash && (c == '/' || c == '.')) {
            end = m_path(s, n, i);
            keep = 0;
        }
        if (end < 0 && has_slash && rel_char(c)) {
            end = m_relpath(s, n, i, &keep);
        }
        if (end < 0 && is_w(c)) end = m_word(s, n, i, &keep);
        if (end < 0 && has_dash && lower_alnum(c)) end = m_dashed(s, n, i, &keep);
        if (end < 0 && has_dot && is_alnum(c)) end = m_host(s, n, i, &keep);
        if (end < 0) {
            /* nothing starts here; nor at the rest of its word (a word character precedes each) */
            copy_run(out + o, s + i, word_end - i);
            o += word_end - i;
            i = word_end;
            continue;
        }
        if (keep) {
            copy_run(out + o, s + i, end - i);
            o += end - i;
        } else {
            memcpy(out + o, "<*>", 3);
            o += 3;
        }
        i = end;
    }
    return o;
}

/* typed_values.blankable */
static int blankable(const unsigned char *t, Py_ssize_t len) {
    if (len <= 0 || len > 64) return 0;
    if (len >= 4) {
        const unsigned char *e = t + len - 4;
        if ((e[0] | 0x20) == 'u' && (e[1] | 0x20) == 's' && (e[2] | 0x20) == 'e' && (e[3] | 0x20) == 'r') return 0;
    }
    if (is_lower(t[0])) {
        Py_ssize_t k = 1;
        while (k < len && (ctype[t[k]] & (T_LOWER | T_NAMEMARK))) k++;
        if (k == len) return len > sensitive.maxlen || !in_words(&sensitive, t, len);
    }
    if (len < 8 || !is_alpha(t[0])) return 0;
    int digits = 0, nonhex = 0;
    for (Py_ssize_t k = 0; k < len; k++) {
        if (is_digit(t[k]))
            digits++;
        else if (!is_alpha(t[k]))
            return 0;
        else if (!(ctype[t[k]] & T_HEXLETTER))
            nonhex = 1;
    }
    if (digits > 1 || !nonhex) return 0;
    for (Py_ssize_t k = 0; k + 3 <= len; k++)
        if (is_upper(t[k]))
            for (Py_ssize_t w = 0; w < calendar.n; w++)
                if (memcmp(calendar.words[w], t + k, 3) == 0) return 0;
    return 1;
}

/* typed_values._read_across_tokens on the lower-case name w[0:k] */
static int read_across_tokens(const unsigned char *w, Py_ssize_t k) {
    return (k >= 4 && memcmp(w + k - 4, "user", 4) == 0) || (k <= sensitive.maxlen && in_words(&sensitive, w, k));
}

/* typed_values.blank_head: the length of the name before "-" and a digit that starts the token, or 0 */
static Py_ssize_t blank_head(const unsigned char *t, Py_ssize_t len) {
    if (len <= 0 || len > 64) return 0;
    Py_ssize_t k = 0;
    while (k < len && is_lower(t[k])) k++;
    if (k == 0 || k + 1 >= len || t[k] != '-' || !is_digit(t[k + 1])) return 0;
    return read_across_tokens(t, k) ? 0 : k;
}

/* typed_values.blank_segment: 1 and the bounds [*a, *b) of the name between the last "/" of the first
 * structural piece and the ":" that ends it, or 0 */
static int blank_segment(const unsigned char *t, Py_ssize_t len, Py_ssize_t *a, Py_ssize_t *b) {
    if (len <= 0 || len > 64) return 0;
    Py_ssize_t p = 0;
    while (p < len && !(t[p] != 0 && strchr(":=,()[]\"'", t[p]) != NULL)) p++;
    if (p >= len || t[p] != ':' || (p + 1 < len && t[p + 1] == '\\')) return 0;
    for (Py_ssize_t k = p + 1; k < len; k++)
        if (t[k] == ':') return 0;
    Py_ssize_t q = p;
    while (q > 0 && is_lower(t[q - 1])) q--;
    if (q == p || q == 0 || t[q - 1] != '/') return 0;
    if (read_across_tokens(t + q, p - q)) return 0;
    *a = q;
    *b = p;
    return 1;
}

/* what a plan's blank position does to this token (typed_values.blanked): 1 blank it whole, 5 blank
 * its name (blank_head), 9 blank its segment's name (blank_segment), 0 nothing */
static int blank_kind(const unsigned char *t, Py_ssize_t len) {
    Py_ssize_t a, b;
    return blankable(t, len) ? 1 : blank_head(t, len) ? 5 : blank_segment(t, len, &a, &b) ? 9 : 0;
}

/* typed_values.NUMBER: [(\[]?(?:[a-z_]+=)?[0-9]+(?:\.[0-9]+)*[A-Za-z%]*[)\],;]* matching the whole token */
static int is_number(const unsigned char *t, Py_ssize_t len) {
    Py_ssize_t k = 0;
    if (k < len && (t[k] == '(' || t[k] == '[')) k++;
    /* an optional key=: lower-case letters and _ then '='; if no '=' follows, back to the number */
    Py_ssize_t q = k;
    while (q < len && (is_lower(t[q]) || t[q] == '_')) q++;
    if (q > k && q < len && t[q] == '=') k = q + 1;
    if (!(k < len && is_digit(t[k]))) return 0;
    while (k < len && is_digit(t[k])) k++;
    while (k + 1 < len && t[k] == '.' && is_digit(t[k + 1])) {
        k++;
        while (k < len && is_digit(t[k])) k++;
    }
    while (k < len && (is_alpha(t[k]) || t[k] == '%')) k++;
    while (k < len && (t[k] == ')' || t[k] == ']' || t[k] == ',' || t[k] == ';')) k++;
    return k == len;
}

/* what a plan's number position does to this token: 3 collapse it (is_number), 0 nothing */
static int number_kind(const unsigned char *t, Py_ssize_t len) { return is_number(t, len) ? 3 : 0; }

/* Objects by content, so that a key made again is the object made before: its hash is then cached and
 * nothing is allocated. The keys of the caches repeat far more than texts do (a planned key stands for
 * every text of its template; a plan key for every text of its first tokens; key values for every event
 * of a service). A pure speed-up: a slot is reused only when its object has exactly the content wanted.
 * A new content replaces the slot's object unless that was found again since it last held off one (a
 * second chance): contents seen once, such as the first level's keys of texts with ids, then pass
 * through without evicting the keys that recur, whose objects the caches' dicts hold (a dict finds its
 * own key object by identity, another by comparing contents). Bounded: ISLOTS objects. */
#define ISLOTS 16384
typedef struct {
    PyObject *obj;
    unsigned long long h;
    int used; /* found again since put, or since it last held off a new content */
} islot;
static islot itab[ISLOTS];

static inline unsigned long long mix(unsigned long long h, unsigned long long v) {
    h = (h ^ v) * 0xff51afd7ed558ccdULL;
    return h ^ (h >> 32);
}

/* Two lanes of sixteen bytes a round: the multiplications of one lane wait on each other, those of two
 * do not. The last 0-7 bytes are read as two overlapping words (or byte by byte under 4), not by a call
 * to memcpy. */
static unsigned long long content_hash(const void *data, Py_ssize_t n, unsigned long long seed) {
    const unsigned char *p = data;
    unsigned long long h = mix(seed, (unsigned long long)n), g = seed ^ 0x9e3779b97f4a7c15ULL;
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        unsigned long long a, b;
        memcpy(&a, p + i, 8);
        memcpy(&b, p + i + 8, 8);
        h = mix(h, a);
        g = mix(g, b);
    }
    if (i + 8 <= n) {
        unsigned long long a;
        memcpy(&a, p + i, 8);
        h = mix(h, a);
        i += 8;
    }
    unsigned long long v = 0;
    Py_ssize_t rest = n - i;
    if (rest >= 4) {
        unsigned int a, b;
        memcpy(&a, p + i, 4);
        memcpy(&b, p + n - 4, 4);
        v = a | (unsigned long long)b << 32;
    } else {
        for (Py_ssize_t k = 0; k < rest; k++) v |= (unsigned long long)p[i + k] << (8 * k);
    }
    return mix(h ^ (g * 0xc2b2ae3d27d4eb4fULL), v);
}

static void islot_put(islot *sl, PyObject *o, unsigned long long h) {
    PyObject *old = sl->obj;
    Py_INCREF(o);
    sl->obj = o;
    sl->h = h;
    sl->used = 0;
    Py_XDECREF(old); /* bytes, or a tuple of str and bytes: no code runs */
}

/* a new object for the content hashing to h: into the slot, unless its object has its second chance */
static void islot_offer(islot *sl, PyObject *o, unsigned long long h) {
    if (sl->obj != NULL && sl->used)
        sl->used = 0;
    else
        islot_put(sl, o, h);
}

/* bytes(p[0:n]), the object made last time for this content if the slot still holds it */
static PyObject *interned_bytes(const char *p, Py_ssize_t n) {
    unsigned long long h = content_hash(p, n, 0x62797465ULL);
    islot *sl = &itab[h & (ISLOTS - 1)];
    PyObject *o = sl->obj;
    if (o != NULL && sl->h == h && PyBytes_CheckExact(o) && PyBytes_GET_SIZE(o) == n &&
        same_run(PyBytes_AS_STRING(o), p, n)) {
        sl->used = 1;
        Py_INCREF(o);
        return o;
    }
    o = PyBytes_FromStringAndSize(p, n);
    if (o != NULL) islot_offer(sl, o, h);
    return o;
}

/* the content of a str or bytes item, for the tuples below; 0 for any other object */
static int item_content(PyObject *v, const void **data, Py_ssize_t *size, int *kind) {
    if (PyUnicode_CheckExact(v)) {
        *kind = PyUnicode_KIND(v);
        *data = PyUnicode_DATA(v);
        *size = PyUnicode_GET_LENGTH(v) * *kind;
        return 1;
    }
    if (PyBytes_CheckExact(v)) {
        *kind = 0;
        *data = PyBytes_AS_STRING(v);
        *size = PyBytes_GET_SIZE(v);
        return 1;
    }
    return 0;
}

/* tuple(items[0:n]) (taking the references), with bytes(tail[0:tail_n]) as a last item if tail is not
 * NULL; or the tuple made last time with equal items, when they are all str or bytes */
/* the key table's hash of a tuple of items[0:n] into *h: 1, or 0 if an item is neither str nor bytes */
static int items_hash(PyObject *const *items, Py_ssize_t n, unsigned long long *h) {
    *h = 0x7475706cULL;
    for (Py_ssize_t f = 0; f < n; f++) {
        const void *d;
        Py_ssize_t sz;
        int kind;
        if (!item_content(items[f], &d, &sz, &kind)) return 0;
        *h = mix(*h, content_hash(d, sz, (unsigned long long)kind + 1));
    }
    return 1;
}

/* whether the first n items of tuple t have the contents of items[0:n] */
static int items_equal(PyObject *t, PyObject *const *items, Py_ssize_t n) {
    for (Py_ssize_t f = 0; f < n; f++) {
        PyObject *x = PyTuple_GET_ITEM(t, f), *y = items[f];
        const void *dx, *dy;
        Py_ssize_t sx, sy;
        int kx, ky;
        if (x != y && !(item_content(x, &dx, &sx, &kx) && item_content(y, &dy, &sy, &ky) && kx == ky && sx == sy &&
                        same_run(dx, dy, sx)))
            return 0;
    }
    return 1;
}

static PyObject *interned_key(PyObject **items, Py_ssize_t n, const char *tail, Py_ssize_t tail_n) {
    unsigned long long h;
    int plain = items_hash(items, n, &h);
    Py_ssize_t size = n + (tail != NULL);
    if (tail != NULL) h = mix(h, content_hash(tail, tail_n, 1));
    islot *sl = plain ? &itab[h & (ISLOTS - 1)] : NULL;
    PyObject *t = sl != NULL ? sl->obj : NULL;
    if (t != NULL && sl->h == h && PyTuple_CheckExact(t) && PyTuple_GET_SIZE(t) == size) {
        int same = items_equal(t, items, n);
        if (same && tail != NULL) {
            PyObject *x = PyTuple_GET_ITEM(t, n);
            same = PyBytes_CheckExact(x) && PyBytes_GET_SIZE(x) == tail_n &&
                   same_run(PyBytes_AS_STRING(x), tail, tail_n);
        }
        if (same) {
            for (Py_ssize_t f = 0; f < n; f++) Py_DECREF(items[f]);
            sl->used = 1;
            Py_INCREF(t);
            return t;
        }
    }
    t = PyTuple_New(size);
    PyObject *last = t != NULL && tail != NULL ? PyBytes_FromStringAndSize(tail, tail_n) : NULL;
    if (t == NULL || (tail != NULL && last == NULL)) {
        Py_XDECREF(t);
        for (Py_ssize_t f = 0; f < n; f++) Py_DECREF(items[f]);
        return NULL;
    }
    for (Py_ssize_t f = 0; f < n; f++) PyTuple_SET_ITEM(t, f, items[f]);
    if (tail != NULL) PyTuple_SET_ITEM(t, n, last);
    if (sl != NULL) islot_offer(sl, t, h);
    return t;
}

/* intern(o): the object the key table holds for the content of o (bytes, or a tuple of str and bytes),
 * which becomes o itself where the table held none; o for any other object. The caches' keys made so
 * are the objects the block calls make for the same content, so a dict lookup finds them by identity
 * instead of comparing contents. */
static PyObject *intern(PyObject *self, PyObject *o) {
    (void)self;
    unsigned long long h;
    if (PyBytes_CheckExact(o)) {
        h = content_hash(PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o), 0x62797465ULL);
    } else if (PyTuple_CheckExact(o)) {
        if (!items_hash(((PyTupleObject *)o)->ob_item, PyTuple_GET_SIZE(o), &h)) return Py_NewRef(o);
    } else {
        return Py_NewRef(o);
    }
    islot *sl = &itab[h & (ISLOTS - 1)];
    PyObject *t = sl->obj;
    int same = t != NULL && sl->h == h && Py_TYPE(t) == Py_TYPE(o);
    if (same && PyBytes_CheckExact(o)) {
        same = PyBytes_GET_SIZE(t) == PyBytes_GET_SIZE(o) &&
               memcmp(PyBytes_AS_STRING(t), PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o)) == 0;
    } else if (same) {
        same = PyTuple_GET_SIZE(t) == PyTuple_GET_SIZE(o) &&
               items_equal(t, ((PyTupleObject *)o)->ob_item, PyTuple_GET_SIZE(o));
    }
    if (!same) islot_put(sl, o, h); /* the object a dict stores: it takes the slot */
    sl->used = 1;
    return Py_NewRef(sl->obj);
}

/* flag[j] = what `applies` says (not 0) for each position j of `positions` in range: 1 if any, 0 if
 * none, -1 on error (a position that is not an int) */
static int mark(PyObject *positions, int (*applies)(const unsigned char *, Py_ssize_t), const unsigned char *shape,
                const Py_ssize_t *ts, const Py_ssize_t *te, Py_ssize_t ntok, char *flag) {
    int any = 0;
    for (Py_ssize_t b = 0; b < PyTuple_GET_SIZE(positions); b++) {
        Py_ssize_t j = PyLong_AsSsize_t(PyTuple_GET_ITEM(positions, b));
        if (j == -1 && PyErr_Occurred()) return -1;
        int r = j >= 0 && j < ntok ? applies(shape + ts[j], te[j] - ts[j]) : 0;
        if (r) {
            flag[j] = (char)r;
            any = 1;
        }
    }
    return any;
}

/* plans[key] if it is a plan that applies to these tokens (a new reference), else NULL (no error) or
 * NULL with an error set */
/* typed_values.select_plan for one plan key: 1 and the positions it blanks, keeps and collapses in
 * this text (as flags, 1 blank, 5 and 9 blank a name, 2 keep, 3 collapse) if plans[key] applies; 0 if
 * not; -1 on error */
static int find_plan(PyObject *plans, const char *key, Py_ssize_t keylen, const unsigned char *shape,
                     const Py_ssize_t *ts, const Py_ssize_t *te, Py_ssize_t ntok, char *flag) {
    PyObject *k = interned_bytes(key, keylen);
    if (k == NULL) return -1;
    PyObject *plan = PyDict_GetItemWithError(plans, k);
    Py_DECREF(k);
    if (plan == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) != 4) return 0;
    PyObject *blank = PyTuple_GET_ITEM(plan, 0), *kept = PyTuple_GET_ITEM(plan, 1);
    PyObject *kept_shapes = PyTuple_GET_ITEM(plan, 2), *numbers = PyTuple_GET_ITEM(plan, 3);
    if (!PyTuple_Check(blank) || !PyTuple_Check(kept) || !PyTuple_Check(kept_shapes) || !PyTuple_Check(numbers))
        return 0;
    if (PyTuple_GET_SIZE(kept) != PyTuple_GET_SIZE(kept_shapes)) return 0;
    memset(flag, 0, (size_t)ntok);
    int any = 0;
    for (Py_ssize_t b = 0; b < PyTuple_GET_SIZE(kept); b++) {
        Py_ssize_t j = PyLong_AsSsize_t(PyTuple_GET_ITEM(kept, b));
        if (j == -1 && PyErr_Occurred()) return -1;
        if (j < 0 || j >= ntok) return 0;
        PyObject *want = PyTuple_GET_ITEM(kept_shapes, b);
        if (!PyBytes_Check(want) || PyBytes_GET_SIZE(want) != te[j] - ts[j] ||
            !same_run(PyBytes_AS_STRING(want), shape + ts[j], te[j] - ts[j]))
            return 0;
        flag[j] = 2;
        any = 1;
    }
    int blanked = mark(blank, blank_kind, shape, ts, te, ntok, flag);
    if (blanked < 0) return -1;
    int collapsed = mark(numbers, number_kind, shape, ts, te, ntok, flag);
    if (collapsed < 0) return -1;
    return any || blanked || collapsed;
}

/* " <n>" as b" %d" % n writes it; returns its length */
static Py_ssize_t format_count(char *out, Py_ssize_t n) {
    char digits[24];
    int d = 0;
    do {
        digits[d++] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    out[0] = ' ';
    for (int k = 0; k < d; k++) out[1 + k] = digits[d - 1 - k];
    return 1 + d;
}

/* the blanked, kept and collapsed positions (flags 1, 5 and 9; 2; 3) as three 64-bit little-endian masks */
static void put_masks(char *out, const char *flag, Py_ssize_t ntok) {
    unsigned long long m[4] = {0, 0, 0, 0};
    for (Py_ssize_t j = 0; j < ntok && j < 64; j++) m[(unsigned char)flag[j] & 3] |= 1ULL << j;
    for (int w = 1; w <= 3; w++) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(out + 8 * (w - 1), &m[w], 8);
#else
        for (int k = 0; k < 8; k++) out[8 * (w - 1) + k] = (char)((m[w] >> (8 * k)) & 0xff);
#endif
    }
}

/* the key under the plan that applies (typed_values.apply_plan), or NULL: no plan (no error set) */
static PyObject *planned(PyObject *plans, const unsigned char *raw, unsigned char *shape, Py_ssize_t len,
                         const Py_ssize_t *ts, const Py_ssize_t *te, Py_ssize_t ntok) {
    Py_ssize_t l0 = te[0] - ts[0], l1 = te[1] - ts[1];
    char small[256];
    char *buf = (l0 + l1 + 32 <= (Py_ssize_t)sizeof(small)) ? small : PyMem_Malloc((size_t)(l0 + l1 + 32));
    if (buf == NULL) return PyErr_NoMemory();
    char flag[MAXTOK];
    int found = 0;
    /* the first token's index entry: which kinds of plan key exist for it (typed_values.Plans) */
    unsigned long kinds = 0;
    PyObject *k0 = interned_bytes((const char *)shape + ts[0], l0);
    PyObject *entry = k0 == NULL ? NULL : PyDict_GetItemWithError(plans, k0);
    Py_XDECREF(k0);
    if (entry == NULL) found = PyErr_Occurred() ? -1 : 0;
    else if (PyLong_CheckExact(entry)) kinds = PyLong_AsUnsignedLongMask(entry);
    for (int two = 1; two >= 0 && found == 0; two--) {
        if (!(kinds & (two ? 2 : 1))) continue;
        Py_ssize_t kl = l0;
        memcpy(buf, shape + ts[0], (size_t)l0);
        if (two) {
            buf[kl++] = ' ';
            memcpy(buf + kl, shape + ts[1], (size_t)l1);
            kl += l1;
        }
        kl += format_count(buf + kl, ntok);
        found = find_plan(plans, buf, kl, shape, ts, te, ntok, flag);
    }
    if (buf != small) PyMem_Free(buf);
    if (found <= 0) return NULL;
    char rsmall[1536];
    char *r = len + 25 <= (Py_ssize_t)sizeof(rsmall) ? rsmall : PyMem_Malloc((size_t)(len + 25));
    if (r == NULL) return PyErr_NoMemory();
    r[0] = (char)0xff;
    put_masks(r + 1, flag, ntok);
    /* shape[from:] is not in r yet: the tokens no flag changes go with the white space around them, in
     * one copy up to the next flagged token */
    Py_ssize_t o = 25, from = 0;
    for (Py_ssize_t j = 0; j < ntok; j++) {
        if (flag[j] == 0) continue;
        copy_run(r + o, shape + from, ts[j] - from);
        o += ts[j] - from;
        if (flag[j] == 1) {
            r[o++] = 0;
        } else if (flag[j] == 5) {
            Py_ssize_t h = blank_head(shape + ts[j], te[j] - ts[j]);
            r[o++] = 0;
            copy_run(r + o, shape + ts[j] + h, te[j] - ts[j] - h);
            o += te[j] - ts[j] - h;
        } else if (flag[j] == 9) {
            Py_ssize_t a = 0, b = 0;
            blank_segment(shape + ts[j], te[j] - ts[j], &a, &b);
            copy_run(r + o, shape + ts[j], a);
            o += a;
            r[o++] = 0;
            copy_run(r + o, shape + ts[j] + b, te[j] - ts[j] - b);
            o += te[j] - ts[j] - b;
        } else if (flag[j] == 3) {
            /* each run of digits one 0 */
            for (Py_ssize_t k = ts[j]; k < te[j]; k++)
                if (!(is_digit(shape[k]) && k > ts[j] && is_digit(shape[k - 1]))) r[o++] = (char)shape[k];
        } else { /* 2: kept as written */
            copy_run(r + o, raw + ts[j], te[j] - ts[j]);
            o += te[j] - ts[j];
        }
        from = te[j];
    }
    copy_run(r + o, shape + from, len - from);
    o += len - from;
    PyObject *res = interned_bytes(r, o);
    if (r != rsmall) PyMem_Free(r);
    return res;
}

/* typed_values._SPLIT_MISMATCH: any of \x1c-\x1f in s[0:n], eight bytes at a time */
static int split_mismatch(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t k = 0;
    for (; k + 8 <= n; k += 8) {
        unsigned long long v;
        memcpy(&v, s + k, 8);
        /* a byte of v is 0 exactly where the text has 0x1c-0x1f */
        v = (v ^ 0x1c1c1c1c1c1c1c1cULL) & 0xfcfcfcfcfcfcfcfcULL;
        if ((v - 0x0101010101010101ULL) & ~v & 0x8080808080808080ULL) return 1;
    }
    for (; k < n; k++)
        if (s[k] >= 0x1c && s[k] <= 0x1f) return 1;
    return 0;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* the bytes lo..hi of v (eight ASCII bytes, so no sum below carries into the next byte), as their
 * high bits */
static inline unsigned long long bytes_in(unsigned long long v, unsigned char lo, unsigned char hi) {
    return (v + (0x80ULL - lo) * ONES) & ~(v + (0x7fULL - hi) * ONES) & HIGHS;
}

/* shape[0:len] = raw with the digits 1-9 made 0, and the tokens of raw (runs without white space) as
 * ts/te; returns their count, or -1 past min(max_tokens, MAXTOK) tokens (the shape is whole then).
 * Eight bytes at a time: the white space of a word is a bit mask, and each token start and end one bit
 * of it (raw is ASCII). */
static Py_ssize_t shape_and_tokens(const unsigned char *raw, unsigned char *shape, Py_ssize_t len, Py_ssize_t *ts,
                                   Py_ssize_t *te) {
    Py_ssize_t limit = max_tokens < MAXTOK ? max_tokens : MAXTOK;
    Py_ssize_t ntok = 0, k = 0;
    int in_tok = 0;
    for (; k + 8 <= len; k += 8) {
        unsigned long long v;
        memcpy(&v, raw + k, 8);
        unsigned long long sv = v & ~(((bytes_in(v, '1', '9') >> 7) & ONES) * 0x0f);
        memcpy(shape + k, &sv, 8);
        if (ntok < 0) continue;
        unsigned long long wsv = bytes_in(v, 0x09, 0x0d) | bytes_in(v, ' ', ' ');
        unsigned ws = (unsigned)((((wsv >> 7) & ONES) * 0x0102040810204080ULL) >> 56);
        unsigned prev = ((ws << 1) | (in_tok ? 0u : 1u)) & 0xff; /* bit i: byte i-1 is white space */
        unsigned edges = ((~ws & prev) | (ws & ~prev)) & 0xff;   /* token starts and token ends */
        while (edges) {
            int b = __builtin_ctz(edges);
            edges &= edges - 1;
            if (ws >> b & 1) {
                te[ntok++] = k + b;
            } else {
                if (ntok >= limit) {
                    ntok = -1;
                    break;
                }
                ts[ntok] = k + b;
            }
        }
        in_tok = !(ws >> 7 & 1);
    }
    for (; k < len; k++) {
        unsigned char c = raw[k];
        shape[k] = (c >= '1' && c <= '9') ? '0' : c;
        if (ntok < 0) continue;
        if (is_space(c)) {
            if (in_tok) te[ntok++] = k;
            in_tok = 0;
        } else if (!in_tok) {
            if (ntok >= limit) {
                ntok = -1;
                continue;
            }
            ts[ntok] = k;
            in_tok = 1;
        }
    }
    if (ntok >= 0 && in_tok) te[ntok++] = len;
    return ntok;
}

static PyObject *key_of(PyObject *text, PyObject *plans) {
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "key() text must be str");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(text)) {
        if (fallback == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "_stage0.configure() was not called");
            return NULL;
        }
        return PyObject_CallFunctionObjArgs(fallback, text, plans, NULL);
    }
    const unsigned char *s = (const unsigned char *)PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    unsigned char small[2 * 1024 + 16];
    unsigned char *raw = (2 * n + 16 <= (Py_ssize_t)sizeof(small) / 2) ? small : PyMem_Malloc((size_t)(4 * n + 32));
    if (raw == NULL) return PyErr_NoMemory();
    unsigned char *shape = raw == small ? small + sizeof(small) / 2 : raw + 2 * n + 16;
    Py_ssize_t len = stage0(s, n, raw);
    PyObject *result = NULL;
    int plannable = PyDict_Check(plans) && PyDict_GET_SIZE(plans) > 0 && n < max_chars && !split_mismatch(s, n);
    if (!plannable) {
        for (Py_ssize_t k = 0; k < len; k++) shape[k] = (raw[k] >= '1' && raw[k] <= '9') ? '0' : raw[k];
    } else {
        Py_ssize_t ts[MAXTOK], te[MAXTOK];
        Py_ssize_t ntok = shape_and_tokens(raw, shape, len, ts, te);
        if (ntok >= 2) {
            result = planned(plans, raw, shape, len, ts, te, ntok);
            if (result == NULL && PyErr_Occurred()) goto done;
        }
    }
    if (result == NULL) result = interned_bytes((const char *)shape, len);
done:
    if (raw != small) PyMem_Free(raw);
    return result;
}

/* typed_values.stage0_py for an ASCII text (ValueError for any other: the caller hands those to Python) */
static PyObject *stage0_text(PyObject *self, PyObject *text) {
    (void)self;
    if (!PyUnicode_Check(text) || !PyUnicode_IS_ASCII(text)) {
        PyErr_SetString(PyExc_ValueError, "stage0() takes an ASCII str");
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    unsigned char small[1024];
    unsigned char *out = 2 * n + 16 <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc((size_t)(2 * n + 16));
    if (out == NULL) return PyErr_NoMemory();
    Py_ssize_t len = stage0((const unsigned char *)PyUnicode_DATA(text), n, out);
    PyObject *res = PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, out, len);
    if (out != small) PyMem_Free(out);
    return res;
}

static PyObject *key(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "key(text, plans)");
        return NULL;
    }
    return key_of(args[0], args[1]);
}

/* Where type `tp` keeps attribute `name` as a plain object slot (a msgspec Struct field), or -1: read
 * through PyObject_GetAttr then. */
static Py_ssize_t slot_of(PyTypeObject *tp, PyObject *name) {
    PyObject *d = _PyType_Lookup(tp, name);
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) return -1;
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    return m->type == T_OBJECT_EX ? m->offset : -1;
}

/* ev.<name>, a new reference, through the slot when there is one */
static inline PyObject *field(PyObject *ev, Py_ssize_t slot, PyObject *name) {
    if (slot >= 0) {
        PyObject *v = *(PyObject **)((char *)ev + slot);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
    }
    return PyObject_GetAttr(ev, name);
}

#define MAXFIELDS 32

/* What both block calls read from each decoded event: its key values and its text, by slot. */
typedef struct {
    PyObject *attrs, *tattr;
    Py_ssize_t nk;
    PyTypeObject *tp;
    Py_ssize_t slots[MAXFIELDS], tslot;
} event_reader;

/* Checks the arguments (events, key_attrs, template_attr, a dict) of block call `name`; 0, or -1 with an
 * error set. */
static int reader_init(event_reader *r, const char *name, PyObject *events, PyObject *attrs, PyObject *tattr,
                       PyObject *dict) {
    if (!PyList_Check(events) || !PyTuple_Check(attrs) || !PyUnicode_Check(tattr) || !PyDict_Check(dict) ||
        PyTuple_GET_SIZE(attrs) > MAXFIELDS) {
        PyErr_Format(PyExc_TypeError, "%s() takes a list, a tuple of at most %d names, a name and a dict", name,
                     MAXFIELDS);
        return -1;
    }
    for (Py_ssize_t f = 0; f < PyTuple_GET_SIZE(attrs); f++)
        if (!PyUnicode_Check(PyTuple_GET_ITEM(attrs, f))) {
            PyErr_Format(PyExc_TypeError, "%s() attribute names are str", name);
            return -1;
        }
    r->attrs = attrs;
    r->tattr = tattr;
    r->nk = PyTuple_GET_SIZE(attrs);
    r->tp = NULL;
    r->tslot = -1;
    return 0;
}

/* The key values of `ev` into vals[0:nk] (new references): 0, or -1 with an error set and none held. */
static int read_keys(event_reader *r, PyObject *ev, PyObject **vals) {
    if (Py_TYPE(ev) != r->tp) {
        r->tp = Py_TYPE(ev);
        for (Py_ssize_t f = 0; f < r->nk; f++) r->slots[f] = slot_of(r->tp, PyTuple_GET_ITEM(r->attrs, f));
        r->tslot = slot_of(r->tp, r->tattr);
    }
    for (Py_ssize_t f = 0; f < r->nk; f++) {
        vals[f] = field(ev, r->slots[f], PyTuple_GET_ITEM(r->attrs, f));
        if (vals[f] == NULL) {
            for (Py_ssize_t g = 0; g < f; g++) Py_DECREF(vals[g]);
            return -1;
        }
    }
    return 0;
}

/* the text of `ev` (a new reference), after read_keys on it */
static PyObject *read_text(event_reader *r, PyObject *ev) { return field(ev, r->tslot, r->tattr); }

/* One event's answer in a block call, given its key values (new references, which it takes): a new
 * reference, or NULL with an error set. */
typedef PyObject *(*per_event)(event_reader *rd, PyObject *ev, PyObject **vals, PyObject *dict, PyObject *miss);

/* A block call `name`(events, key_attrs, template_attr, dict, miss): `one` for each event, as a list. */
static PyObject *block_call(const char *name, PyObject *const *args, Py_ssize_t nargs, per_event one) {
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "%s() takes (events, key_attrs, template_attr, dict, miss)", name);
        return NULL;
    }
    PyObject *events = args[0], *dict = args[3], *miss = args[4];
    event_reader rd;
    if (reader_init(&rd, name, events, args[1], args[2], dict) < 0) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(events);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ev = PyList_GET_ITEM(events, i);
        PyObject *vals[MAXFIELDS];
        PyObject *found = read_keys(&rd, ev, vals) < 0 ? NULL : one(&rd, ev, vals, dict, miss);
        if (found == NULL) {
            Py_DECREF(out); /* the unset items are NULL, which list_dealloc skips */
            return NULL;
        }
        PyList_SET_ITEM(out, i, found);
    }
    return out;
}

/* typed_values.lookup_events_py for one event: second[raw key] is (plans, entries) and the answer is
 * entries.get(key(text, plans), miss); miss where second has no raw key (no key is computed then). */
static PyObject *second_entry(event_reader *rd, PyObject *ev, PyObject **vals, PyObject *second, PyObject *miss) {
    PyObject *rk = interned_key(vals, rd->nk, NULL, 0);
    if (rk == NULL) return NULL;
    PyObject *sec = PyDict_GetItemWithError(second, rk);
    Py_DECREF(rk);
    if (sec == NULL) return PyErr_Occurred() ? NULL : Py_NewRef(miss);
    if (!PyTuple_Check(sec) || PyTuple_GET_SIZE(sec) != 2 || !PyDict_Check(PyTuple_GET_ITEM(sec, 1))) {
        PyErr_SetString(PyExc_TypeError, "lookup_events() second holds (plans, entries) pairs");
        return NULL;
    }
    PyObject *text = read_text(rd, ev);
    if (text == NULL) return NULL;
    Py_INCREF(sec); /* key_of may run Python code (the fallback for non-ASCII text) */
    PyObject *k = key_of(text, PyTuple_GET_ITEM(sec, 0));
    Py_DECREF(text);
    PyObject *found = NULL;
    if (k != NULL) {
        found = PyDict_GetItemWithError(PyTuple_GET_ITEM(sec, 1), k);
        Py_DECREF(k);
        if (found == NULL && !PyErr_Occurred()) found = miss;
        Py_XINCREF(found);
    }
    Py_DECREF(sec);
    return found;
}

static PyObject *lookup_events(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    return block_call("lookup_events", args, nargs, second_entry);
}

/* typed_values.first_level_py for one event: fast.get((*raw key values, digit shape of the text), miss),
 * the digit shape being the text's UTF-8 with the ASCII digits 1-9 made 0 (a TypeError for a text that is
 * not a str, UnicodeEncodeError for one that cannot be encoded). */
static PyObject *first_entry(event_reader *rd, PyObject *ev, PyObject **vals, PyObject *fast, PyObject *miss) {
    PyObject *text = read_text(rd, ev);
    const char *u = NULL;
    Py_ssize_t ulen = 0;
    if (text != NULL && !PyUnicode_Check(text)) {
        Py_CLEAR(text);
        PyErr_SetString(PyExc_TypeError, "first_level() texts must be str");
    } else if (text != NULL && PyUnicode_IS_ASCII(text)) {
        u = (const char *)PyUnicode_DATA(text);
        ulen = PyUnicode_GET_LENGTH(text);
    } else if (text != NULL) {
        u = PyUnicode_AsUTF8AndSize(text, &ulen);
    }
    char small[1024];
    char *sh = u == NULL ? NULL : ulen <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc((size_t)ulen + 1);
    if (u != NULL && sh == NULL) PyErr_NoMemory();
    if (sh != NULL)
        for (Py_ssize_t c = 0; c < ulen; c++) sh[c] = (u[c] >= '1' && u[c] <= '9') ? '0' : u[c];
    Py_XDECREF(text);
    if (sh == NULL) {
        for (Py_ssize_t f = 0; f < rd->nk; f++) Py_DECREF(vals[f]);
        return NULL;
    }
    PyObject *k = interned_key(vals, rd->nk, sh, ulen);
    if (sh != small) PyMem_Free(sh);
    if (k == NULL) return NULL;
    PyObject *found = PyDict_GetItemWithError(fast, k);
    Py_DECREF(k);
    if (found == NULL && !PyErr_Occurred()) found = miss;
    Py_XINCREF(found);
    return found;
}

static PyObject *first_level(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    return block_call("first_level", args, nargs, first_entry);
}

static int take_words(PyObject *seq, wordlist *w) {
    PyObject *fast = PySequence_Fast(seq, "a word list must be a sequence of str");
    if (fast == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast), maxlen = 0;
    char **words = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (words == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        const char *u = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(fast, k));
        if (u == NULL || (words[k] = PyMem_Malloc(strlen(u) + 1)) == NULL) {
            for (Py_ssize_t m = 0; m < k; m++) PyMem_Free(words[m]);
            PyMem_Free(words);
            Py_DECREF(fast);
            if (!PyErr_Occurred()) PyErr_NoMemory();
            return -1;
        }
        strcpy(words[k], u);
        if ((Py_ssize_t)strlen(u) > maxlen) maxlen = (Py_ssize_t)strlen(u);
    }
    Py_DECREF(fast);
    for (Py_ssize_t k = 0; k < w->n; k++) PyMem_Free(w->words[k]);
    PyMem_Free(w->words);
    w->words = words;
    w->n = n;
    w->maxlen = maxlen;
    memset(w->first, 0, sizeof(w->first));
    w->lens = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        size_t l = strlen(words[k]);
        if (l == 0 || l >= 64) {
            PyErr_SetString(PyExc_ValueError, "a word list's words have 1 to 63 characters");
            return -1;
        }
        w->first[(unsigned char)words[k][0]] = 1;
        w->lens |= 1ULL << l;
    }
    return 0;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *fn, *g, *nt, *fe, *sens, *meth, *cal;
    Py_ssize_t chars, tokens;
    if (!PyArg_ParseTuple(args, "OnnOOOOOO", &fn, &chars, &tokens, &g, &nt, &fe, &sens, &meth, &cal))
        return NULL;
    if (tokens > MAXTOK) {
        PyErr_SetString(PyExc_ValueError, "too many tokens for a plan");
        return NULL;
    }
    if (take_words(g, &gtlds) < 0 || take_words(nt, &not_tlds) < 0 || take_words(fe, &file_exts) < 0 ||
        take_words(sens, &sensitive) < 0 || take_words(meth, &http_methods) < 0 || take_words(cal, &calendar) < 0)
        return NULL;
    for (Py_ssize_t w = 0; w < calendar.n; w++)
        if (strlen(calendar.words[w]) != 3) {
            PyErr_SetString(PyExc_ValueError, "calendar words are three letters");
            return NULL;
        }
    Py_XINCREF(fn);
    Py_XSETREF(fallback, fn);
    max_chars = chars;
    max_tokens = tokens;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"key", (PyCFunction)(void (*)(void))key, METH_FASTCALL, "typed_values.key_py, for ASCII text"},
    {"lookup_events", (PyCFunction)(void (*)(void))lookup_events, METH_FASTCALL, "typed_values.lookup_events_py"},
    {"stage0", stage0_text, METH_O, "typed_values.stage0_py, for an ASCII text"},
    {"intern", intern, METH_O, "the key table's object for this content (bytes, or a tuple of str and bytes)"},
    {"first_level", (PyCFunction)(void (*)(void))first_level, METH_FASTCALL, "typed_values.first_level_py"},
    {"configure", configure, METH_VARARGS,
     "configure(fallback, max_chars, max_tokens, gtlds, not_tlds, file_exts, sensitive, http_methods, calendar)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_stage0", NULL, -1, methods};

PyMODINIT_FUNC PyInit__stage0(void) {
    init_classes();
    return PyModule_Create(&module);
}
