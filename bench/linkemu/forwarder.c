/*
 * jettui bench link emulator: a TUN-to-TUN forwarder between two network namespaces.
 *
 *   netns A: TUN "jta" <-fd->  forwarder (root netns)  <-fd-> TUN "jtb" :netns B
 *
 * Per direction (A->B and B->A) it imposes, in this order:
 *   1. tail-drop queue admission: the packet waits for the serialisation clock; if the wait
 *      (backlog) would exceed --queue-ms, or --queue-pkts packets are already waiting, it is dropped;
 *   2. serialisation at the rate cap (--rate-mbit; 0 = unlimited);
 *   3. random loss on the wire (--loss-*: the lost packet has used its slot on the bottleneck);
 *   4. fixed one-way delay (--delay-ms), plus --reorder-ms extra for a random --reorder-* share of
 *      packets (later packets overtake them);
 *   5. random duplication (--dup-*: the copy is delivered right after the original and does not
 *      use the rate cap).
 * Packets wait in a binary min-heap keyed by (due time, arrival number); one epoll loop with a
 * nanosecond timeout (epoll_pwait2) reads both TUNs and writes due packets to the other TUN.
 *
 * The TUNs are created inside the namespaces with setns(2) (--ns-a/--ns-b are netns files such as
 * /var/run/netns/NAME); the process then returns to its own namespace. The TUNs are not persistent:
 * they vanish when the process exits. It prints "READY" once both exist.
 *
 * Control: every byte read on stdin prints one line "STATS {json}" with the counters so far;
 * EOF on stdin (the controlling process died or closed it), SIGINT, SIGTERM or --seconds elapsed end
 * the run; the final counters are printed as "FINAL {json}" (and written to --stats-file if given).
 *
 * TCP retransmissions are counted at ingress, per direction, by tracking the highest sequence number
 * seen per flow (IPv4 4-tuple): payload bytes below it are retransmitted bytes.
 *
 * Build: gcc -O2 -Wall -o forwarder forwarder.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_PKT 65600
#define READ_BATCH 256
#define FLOW_SLOTS 4096

typedef struct {
    int64_t due;
    uint64_t order;
    uint32_t len;
    unsigned char data[];
} pkt_t;

typedef struct {
    uint32_t saddr, daddr;
    uint16_t sport, dport;
    uint32_t max_end;
    int used;
} flow_t;

typedef struct {
    /* settings */
    double rate_bps;       /* 0 = unlimited */
    int64_t delay_ns;
    double loss, reorder, dup;
    int64_t reorder_ns;
    int64_t queue_ns;      /* 0 = unlimited */
    long queue_pkts;       /* 0 = unlimited */
    /* state */
    int64_t next_free;     /* serialisation clock */
    pkt_t **heap;
    size_t heap_len, heap_cap;
    int64_t *fifo;         /* serialisation finish times of packets still queued (ring) */
    size_t fifo_head, fifo_len, fifo_cap;
    flow_t flows[FLOW_SLOTS];
    /* counters */
    uint64_t rx_pkts, rx_bytes, tx_pkts, tx_bytes;
    uint64_t drop_loss_pkts, drop_loss_bytes, drop_queue_pkts, drop_queue_bytes;
    uint64_t drop_write_pkts, dup_pkts, reorder_pkts, nonip_pkts;
    uint64_t tcp_payload_bytes, tcp_retrans_bytes, tcp_retrans_pkts, udp_payload_bytes;
    int64_t max_backlog_ns;
    int in_fd, out_fd;
    const char *name;
} dir_t;

static volatile sig_atomic_t g_stop = 0;
static uint64_t g_order = 0;
static uint64_t rng_s[2];

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t rng_next(void) { /* xorshift128+ */
    uint64_t s1 = rng_s[0];
    const uint64_t s0 = rng_s[1];
    rng_s[0] = s0;
    s1 ^= s1 << 23;
    rng_s[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return rng_s[1] + s0;
}

static double rng_unit(void) { return (rng_next() >> 11) * (1.0 / 9007199254740992.0); }

static int chance(double p) { return p > 0.0 && rng_unit() < p; }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "forwarder: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* ---- min-heap by (due, order) ---- */
static int pkt_less(const pkt_t *a, const pkt_t *b) {
    return a->due < b->due || (a->due == b->due && a->order < b->order);
}

static void heap_push(dir_t *d, pkt_t *p) {
    if (d->heap_len == d->heap_cap) {
        d->heap_cap = d->heap_cap ? d->heap_cap * 2 : 1024;
        d->heap = realloc(d->heap, d->heap_cap * sizeof(pkt_t *));
        if (!d->heap) die("realloc");
    }
    size_t i = d->heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pkt_less(p, d->heap[parent])) break;
        d->heap[i] = d->heap[parent];
        i = parent;
    }
    d->heap[i] = p;
}

static pkt_t *heap_pop(dir_t *d) {
    pkt_t *top = d->heap[0];
    pkt_t *last = d->heap[--d->heap_len];
    size_t i = 0, n = d->heap_len;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const pkt_t *best = last;
        if (l < n && pkt_less(d->heap[l], best)) { m = l; best = d->heap[l]; }
        if (r < n && pkt_less(d->heap[r], best)) { m = r; }
        if (m == i) break;
        d->heap[i] = d->heap[m];
        i = m;
    }
    if (n > 0) d->heap[i] = last;
    return top;
}

/* ---- ring of serialisation finish times (for --queue-pkts) ---- */
static void fifo_expire(dir_t *d, int64_t now) {
    while (d->fifo_len > 0 && d->fifo[d->fifo_head] <= now) {
        d->fifo_head = (d->fifo_head + 1) % d->fifo_cap;
        d->fifo_len--;
    }
}

static void fifo_push(dir_t *d, int64_t t) {
    if (d->fifo_len == d->fifo_cap) {
        size_t ncap = d->fifo_cap ? d->fifo_cap * 2 : 1024;
        int64_t *n = malloc(ncap * sizeof(int64_t));
        if (!n) die("malloc");
        for (size_t i = 0; i < d->fifo_len; i++) n[i] = d->fifo[(d->fifo_head + i) % d->fifo_cap];
        free(d->fifo);
        d->fifo = n;
        d->fifo_cap = ncap;
        d->fifo_head = 0;
    }
    d->fifo[(d->fifo_head + d->fifo_len) % d->fifo_cap] = t;
    d->fifo_len++;
}

/* ---- ingress accounting (IPv4 TCP/UDP) ---- */
static void account(dir_t *d, const unsigned char *b, uint32_t len) {
    if (len < 20 || (b[0] >> 4) != 4) {
        d->nonip_pkts++;
        return;
    }
    uint32_t ihl = (uint32_t)(b[0] & 0x0f) * 4;
    uint32_t tot = ((uint32_t)b[2] << 8) | b[3];
    if (tot > len) tot = len;
    uint16_t frag = (uint16_t)(((b[6] & 0x1f) << 8) | b[7]);
    if (ihl < 20 || tot < ihl || frag != 0) return;
    const unsigned char *l4 = b + ihl;
    uint32_t l4len = tot - ihl;
    if (b[9] == 17 && l4len >= 8) {
        d->udp_payload_bytes += l4len - 8;
    } else if (b[9] == 6 && l4len >= 20) {
        uint32_t doff = (uint32_t)(l4[12] >> 4) * 4;
        if (doff < 20 || doff > l4len) return;
        uint32_t plen = l4len - doff;
        if (plen == 0) return;
        d->tcp_payload_bytes += plen;
        uint32_t saddr, daddr;
        memcpy(&saddr, b + 12, 4);
        memcpy(&daddr, b + 16, 4);
        uint16_t sport = (uint16_t)((l4[0] << 8) | l4[1]), dport = (uint16_t)((l4[2] << 8) | l4[3]);
        uint32_t seq = ((uint32_t)l4[4] << 24) | ((uint32_t)l4[5] << 16) | ((uint32_t)l4[6] << 8) | l4[7];
        uint32_t end = seq + plen;
        uint32_t h = (saddr * 2654435761u) ^ (daddr * 40503u) ^ ((uint32_t)sport << 16 | dport);
        h = (h ^ (h >> 15)) % FLOW_SLOTS;
        for (int probe = 0; probe < FLOW_SLOTS; probe++) {
            flow_t *f = &d->flows[(h + probe) % FLOW_SLOTS];
            if (!f->used) {
                f->used = 1;
                f->saddr = saddr; f->daddr = daddr; f->sport = sport; f->dport = dport;
                f->max_end = end;
                return;
            }
            if (f->saddr == saddr && f->daddr == daddr && f->sport == sport && f->dport == dport) {
                if ((int32_t)(seq - f->max_end) < 0) {
                    int32_t behind = (int32_t)(f->max_end - seq);
                    uint32_t rb = (uint32_t)behind < plen ? (uint32_t)behind : plen;
                    d->tcp_retrans_bytes += rb;
                    d->tcp_retrans_pkts++;
                }
                if ((int32_t)(end - f->max_end) > 0) f->max_end = end;
                return;
            }
        }
    }
}

static pkt_t *pkt_new(const unsigned char *b, uint32_t len) {
    pkt_t *p = malloc(sizeof(pkt_t) + len);
    if (!p) die("malloc");
    p->len = len;
    memcpy(p->data, b, len);
    return p;
}

static void ingress(dir_t *d, const unsigned char *b, uint32_t len, int64_t now) {
    d->rx_pkts++;
    d->rx_bytes += len;
    account(d, b, len);
    int64_t start = d->next_free > now ? d->next_free : now;
    int64_t backlog = start - now;
    if (d->queue_pkts > 0) {
        fifo_expire(d, now);
        if ((long)d->fifo_len >= d->queue_pkts) {
            d->drop_queue_pkts++;
            d->drop_queue_bytes += len;
            return;
        }
    }
    if (d->queue_ns > 0 && backlog > d->queue_ns) {
        d->drop_queue_pkts++;
        d->drop_queue_bytes += len;
        return;
    }
    if (backlog > d->max_backlog_ns) d->max_backlog_ns = backlog;
    int64_t finish = start;
    if (d->rate_bps > 0) finish = start + (int64_t)((double)len * 8.0 * 1e9 / d->rate_bps);
    d->next_free = finish;
    if (d->queue_pkts > 0) fifo_push(d, finish);
    if (chance(d->loss)) {
        d->drop_loss_pkts++;
        d->drop_loss_bytes += len;
        return;
    }
    int64_t due = finish + d->delay_ns;
    if (chance(d->reorder)) {
        due += d->reorder_ns;
        d->reorder_pkts++;
    }
    pkt_t *p = pkt_new(b, len);
    p->due = due;
    p->order = g_order++;
    heap_push(d, p);
    if (chance(d->dup)) {
        pkt_t *c = pkt_new(b, len);
        c->due = due;
        c->order = g_order++;
        heap_push(d, c);
        d->dup_pkts++;
    }
}

static void egress(dir_t *d, int64_t now) {
    while (d->heap_len > 0 && d->heap[0]->due <= now) {
        pkt_t *p = heap_pop(d);
        ssize_t w = write(d->out_fd, p->data, p->len);
        if (w == (ssize_t)p->len) {
            d->tx_pkts++;
            d->tx_bytes += p->len;
        } else {
            d->drop_write_pkts++;
        }
        free(p);
    }
}

static void read_side(dir_t *d, unsigned char *buf) {
    for (int i = 0; i < READ_BATCH; i++) {
        ssize_t n = read(d->in_fd, buf, MAX_PKT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            die("read tun");
        }
        if (n == 0) return;
        ingress(d, buf, (uint32_t)n, now_ns());
    }
}

static void print_dir(FILE *f, const dir_t *d) {
    fprintf(f,
            "\"%s\":{\"rx_pkts\":%llu,\"rx_bytes\":%llu,\"tx_pkts\":%llu,\"tx_bytes\":%llu,"
            "\"drop_loss_pkts\":%llu,\"drop_loss_bytes\":%llu,\"drop_queue_pkts\":%llu,"
            "\"drop_queue_bytes\":%llu,\"drop_write_pkts\":%llu,\"dup_pkts\":%llu,\"reorder_pkts\":%llu,"
            "\"nonip_pkts\":%llu,\"tcp_payload_bytes\":%llu,\"tcp_retrans_bytes\":%llu,"
            "\"tcp_retrans_pkts\":%llu,\"udp_payload_bytes\":%llu,\"max_backlog_ms\":%.3f,"
            "\"queued_pkts\":%zu}",
            d->name, (unsigned long long)d->rx_pkts, (unsigned long long)d->rx_bytes,
            (unsigned long long)d->tx_pkts, (unsigned long long)d->tx_bytes,
            (unsigned long long)d->drop_loss_pkts, (unsigned long long)d->drop_loss_bytes,
            (unsigned long long)d->drop_queue_pkts, (unsigned long long)d->drop_queue_bytes,
            (unsigned long long)d->drop_write_pkts, (unsigned long long)d->dup_pkts,
            (unsigned long long)d->reorder_pkts, (unsigned long long)d->nonip_pkts,
            (unsigned long long)d->tcp_payload_bytes, (unsigned long long)d->tcp_retrans_bytes,
            (unsigned long long)d->tcp_retrans_pkts, (unsigned long long)d->udp_payload_bytes,
            d->max_backlog_ns / 1e6, d->heap_len);
}

static void print_stats(FILE *f, const char *tag, const dir_t *ab, const dir_t *ba, int64_t t0) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    fprintf(f, "%s {\"elapsed_s\":%.6f,\"cpu_s\":%.6f,", tag, (now_ns() - t0) / 1e9, cpu);
    print_dir(f, ab);
    fputc(',', f);
    print_dir(f, ba);
    fputs("}\n", f);
    fflush(f);
}

static int open_tun_in(const char *ns_path, const char *name, int root_fd) {
    int nsfd = open(ns_path, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) die(ns_path);
    if (setns(nsfd, CLONE_NEWNET) < 0) die("setns");
    close(nsfd);
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) die("/dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
    if (setns(root_fd, CLONE_NEWNET) < 0) die("setns back");
    return fd;
}

static void usage(void) {
    fprintf(stderr,
            "usage: forwarder --ns-a PATH --ns-b PATH [--tun-a jta] [--tun-b jtb] [--seconds 60]\n"
            "  [--rate-mbit R] [--rate-ab-mbit R] [--rate-ba-mbit R]   (0 = unlimited)\n"
            "  [--delay-ms D] [--delay-ab-ms D] [--delay-ba-ms D]      (one-way)\n"
            "  [--loss-ab P] [--loss-ba P] [--reorder-ab P] [--reorder-ba P] [--reorder-ms 2]\n"
            "  [--dup-ab P] [--dup-ba P] [--queue-ms Q | --queue-pkts N] [--seed S] [--stats-file F]\n"
            "probabilities are fractions (0.01 = 1 %%)\n");
    exit(1);
}

int main(int argc, char **argv) {
    const char *ns_a = NULL, *ns_b = NULL, *tun_a = "jta", *tun_b = "jtb", *stats_file = NULL;
    double seconds = 60, rate_ab = 0, rate_ba = 0, delay_ab = 0, delay_ba = 0;
    double loss_ab = 0, loss_ba = 0, reo_ab = 0, reo_ba = 0, reo_ms = 2, dup_ab = 0, dup_ba = 0;
    double queue_ms = 0;
    long queue_pkts = 0;
    uint64_t seed = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);
    enum { O_NSA = 1, O_NSB, O_TA, O_TB, O_SEC, O_RATE, O_RAB, O_RBA, O_DEL, O_DAB, O_DBA, O_LAB, O_LBA,
           O_RAB2, O_RBA2, O_RMS, O_DUPA, O_DUPB, O_QMS, O_QPK, O_SEED, O_STF };
    static struct option opts[] = {
        {"ns-a", 1, 0, O_NSA}, {"ns-b", 1, 0, O_NSB}, {"tun-a", 1, 0, O_TA}, {"tun-b", 1, 0, O_TB},
        {"seconds", 1, 0, O_SEC}, {"rate-mbit", 1, 0, O_RATE}, {"rate-ab-mbit", 1, 0, O_RAB},
        {"rate-ba-mbit", 1, 0, O_RBA}, {"delay-ms", 1, 0, O_DEL}, {"delay-ab-ms", 1, 0, O_DAB},
        {"delay-ba-ms", 1, 0, O_DBA}, {"loss-ab", 1, 0, O_LAB}, {"loss-ba", 1, 0, O_LBA},
        {"reorder-ab", 1, 0, O_RAB2}, {"reorder-ba", 1, 0, O_RBA2}, {"reorder-ms", 1, 0, O_RMS},
        {"dup-ab", 1, 0, O_DUPA}, {"dup-ba", 1, 0, O_DUPB}, {"queue-ms", 1, 0, O_QMS},
        {"queue-pkts", 1, 0, O_QPK}, {"seed", 1, 0, O_SEED}, {"stats-file", 1, 0, O_STF}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_NSA: ns_a = optarg; break;
        case O_NSB: ns_b = optarg; break;
        case O_TA: tun_a = optarg; break;
        case O_TB: tun_b = optarg; break;
        case O_SEC: seconds = atof(optarg); break;
        case O_RATE: rate_ab = rate_ba = atof(optarg); break;
        case O_RAB: rate_ab = atof(optarg); break;
        case O_RBA: rate_ba = atof(optarg); break;
        case O_DEL: delay_ab = delay_ba = atof(optarg); break;
        case O_DAB: delay_ab = atof(optarg); break;
        case O_DBA: delay_ba = atof(optarg); break;
        case O_LAB: loss_ab = atof(optarg); break;
        case O_LBA: loss_ba = atof(optarg); break;
        case O_RAB2: reo_ab = atof(optarg); break;
        case O_RBA2: reo_ba = atof(optarg); break;
        case O_RMS: reo_ms = atof(optarg); break;
        case O_DUPA: dup_ab = atof(optarg); break;
        case O_DUPB: dup_ba = atof(optarg); break;
        case O_QMS: queue_ms = atof(optarg); break;
        case O_QPK: queue_pkts = atol(optarg); break;
        case O_SEED: seed = strtoull(optarg, NULL, 0); break;
        case O_STF: stats_file = optarg; break;
        default: usage();
        }
    }
    if (!ns_a || !ns_b || seconds <= 0) usage();
    rng_s[0] = splitmix64(&seed);
    rng_s[1] = splitmix64(&seed);

    prctl(PR_SET_PDEATHSIG, SIGTERM);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int root_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (root_fd < 0) die("/proc/self/ns/net");
    int fa = open_tun_in(ns_a, tun_a, root_fd);
    int fb = open_tun_in(ns_b, tun_b, root_fd);
    close(root_fd);

    static dir_t ab, ba;
    ab.name = "ab"; ab.in_fd = fa; ab.out_fd = fb;
    ba.name = "ba"; ba.in_fd = fb; ba.out_fd = fa;
    ab.rate_bps = rate_ab * 1e6; ba.rate_bps = rate_ba * 1e6;
    ab.delay_ns = (int64_t)(delay_ab * 1e6); ba.delay_ns = (int64_t)(delay_ba * 1e6);
    ab.loss = loss_ab; ba.loss = loss_ba;
    ab.reorder = reo_ab; ba.reorder = reo_ba;
    ab.reorder_ns = ba.reorder_ns = (int64_t)(reo_ms * 1e6);
    ab.dup = dup_ab; ba.dup = dup_ba;
    ab.queue_ns = ba.queue_ns = (int64_t)(queue_ms * 1e6);
    ab.queue_pkts = ba.queue_pkts = queue_pkts;

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.u32 = 0;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fa, &ev) < 0) die("epoll_ctl a");
    ev.data.u32 = 1;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fb, &ev) < 0) die("epoll_ctl b");
    int stdin_open = 1;
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    ev.data.u32 = 2;
    ev.events = EPOLLIN | EPOLLHUP;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0) stdin_open = 0; /* e.g. /dev/null: no control */

    int64_t t0 = now_ns();
    int64_t end = t0 + (int64_t)(seconds * 1e9);
    printf("READY %s %s\n", tun_a, tun_b);
    fflush(stdout);

    unsigned char *buf = malloc(MAX_PKT);
    if (!buf) die("malloc");
    struct epoll_event events[4];
    while (!g_stop) {
        int64_t now = now_ns();
        if (now >= end) break;
        egress(&ab, now);
        egress(&ba, now);
        int64_t wake = end;
        if (ab.heap_len && ab.heap[0]->due < wake) wake = ab.heap[0]->due;
        if (ba.heap_len && ba.heap[0]->due < wake) wake = ba.heap[0]->due;
        int64_t wait = wake - now_ns();
        if (wait < 0) wait = 0;
        if (wait > 50000000) wait = 50000000;
        struct timespec ts = {wait / 1000000000, wait % 1000000000};
        int n = epoll_pwait2(ep, events, 4, &ts, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_pwait2");
        }
        for (int i = 0; i < n; i++) {
            uint32_t which = events[i].data.u32;
            if (which == 0) read_side(&ab, buf);
            else if (which == 1) read_side(&ba, buf);
            else {
                char cb[64];
                ssize_t r = read(0, cb, sizeof cb);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    g_stop = 1;
                    stdin_open = 0;
                } else if (r > 0) {
                    for (ssize_t k = 0; k < r; k++) print_stats(stdout, "STATS", &ab, &ba, t0);
                }
            }
        }
    }
    (void)stdin_open;
    print_stats(stdout, "FINAL", &ab, &ba, t0);
    if (stats_file) {
        FILE *f = fopen(stats_file, "w");
        if (f) {
            print_stats(f, "FINAL", &ab, &ba, t0);
            fclose(f);
        }
    }
    /* human-readable summary on stderr */
    const dir_t *dirs[2] = {&ab, &ba};
    for (int i = 0; i < 2; i++) {
        const dir_t *d = dirs[i];
        fprintf(stderr,
                "forwarder %s: in %llu pkts/%llu B, out %llu pkts/%llu B, dropped: loss %llu, queue %llu, "
                "write %llu; dup %llu, reordered %llu, tcp retrans %llu B\n",
                d->name, (unsigned long long)d->rx_pkts, (unsigned long long)d->rx_bytes,
                (unsigned long long)d->tx_pkts, (unsigned long long)d->tx_bytes,
                (unsigned long long)d->drop_loss_pkts, (unsigned long long)d->drop_queue_pkts,
                (unsigned long long)d->drop_write_pkts, (unsigned long long)d->dup_pkts,
                (unsigned long long)d->reorder_pkts, (unsigned long long)d->tcp_retrans_bytes);
    }
    return 0;
}
