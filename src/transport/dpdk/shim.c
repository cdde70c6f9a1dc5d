/* The DPDK calls ethpaxos makes, behind plain C signatures: the fast path (burst I/O, mbuf
 * alloc/free, data pointers) is static inline in DPDK's headers and cannot be called from
 * Rust directly, and port setup takes structs we keep on this side. */
#include <string.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

int epx_eal_init(int argc, char **argv) { return rte_eal_init(argc, argv); }
int epx_eal_cleanup(void) { return rte_eal_cleanup(); }
int epx_errno(void) { return rte_errno; }
const char *epx_runtime_dir(void) { return rte_eal_get_runtime_dir(); }
const char *epx_strerror(int e) { return rte_strerror(e); }
uint16_t epx_port_count(void) { return rte_eth_dev_count_avail(); }

/* Gives the calling thread an lcore id (and so a mempool cache) if it has none; returns 1 if
 * it registered the thread, 0 if the thread had one, -1 on failure (rte_errno). */
int epx_thread_register(void) {
    if (rte_lcore_id() != LCORE_ID_ANY) return 0;
    return rte_thread_register() == 0 ? 1 : -1;
}
void epx_thread_unregister(void) { rte_thread_unregister(); }

/* 1: link up, 0: down, negative: errno. */
int epx_link_up(uint16_t port) {
    struct rte_eth_link link;
    memset(&link, 0, sizeof link);
    int rc = rte_eth_link_get_nowait(port, &link);
    if (rc < 0) return rc;
    return link.link_status == RTE_ETH_LINK_UP;
}

struct rte_mempool *epx_pool_create(const char *name, unsigned n, uint16_t data_room) {
    return rte_pktmbuf_pool_create(name, n, 256, 0, data_room, (int)rte_socket_id());
}
void epx_pool_free(struct rte_mempool *mp) { rte_mempool_free(mp); }

/* One RX and one TX queue, promiscuous, started. Returns 0 or a negative errno; *step names
 * the call that failed. */
int epx_port_setup(uint16_t port, struct rte_mempool *mp, uint16_t rxd, uint16_t txd,
                   const char **step) {
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof conf);
    int socket = rte_eth_dev_socket_id(port);
    if (socket < 0) socket = 0;
    int rc;
    *step = "rte_eth_dev_configure";
    if ((rc = rte_eth_dev_configure(port, 1, 1, &conf)) < 0) return rc;
    *step = "rte_eth_dev_adjust_nb_rx_tx_desc";
    if ((rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, &rxd, &txd)) < 0) return rc;
    *step = "rte_eth_rx_queue_setup";
    if ((rc = rte_eth_rx_queue_setup(port, 0, rxd, (unsigned)socket, NULL, mp)) < 0) return rc;
    *step = "rte_eth_tx_queue_setup";
    if ((rc = rte_eth_tx_queue_setup(port, 0, txd, (unsigned)socket, NULL)) < 0) return rc;
    *step = "rte_eth_dev_start";
    if ((rc = rte_eth_dev_start(port)) < 0) return rc;
    *step = "rte_eth_promiscuous_enable";
    rte_eth_promiscuous_enable(port); /* some vdevs cannot; not fatal */
    return 0;
}

void epx_port_close(uint16_t port) {
    rte_eth_dev_stop(port);
    rte_eth_dev_close(port);
}

int epx_port_mac(uint16_t port, uint8_t out[6]) {
    struct rte_ether_addr a;
    int rc = rte_eth_macaddr_get(port, &a);
    if (rc == 0) memcpy(out, a.addr_bytes, 6);
    return rc;
}

/* Copies up to n frames into mbufs from `pool` and sends them; returns how many the port took.
 * Frames it did not take are freed here. */
uint16_t epx_tx(uint16_t port, struct rte_mempool *pool, const uint8_t *const *frames,
                const uint16_t *lens, uint16_t n) {
    struct rte_mbuf *m[64];
    if (n > 64) n = 64;
    if (rte_pktmbuf_alloc_bulk(pool, m, n) != 0) return 0;
    for (uint16_t i = 0; i < n; i++) {
        char *p = rte_pktmbuf_append(m[i], lens[i]);
        if (p == NULL) { rte_pktmbuf_free_bulk(m, n); return 0; }
        memcpy(p, frames[i], lens[i]);
    }
    uint16_t sent = rte_eth_tx_burst(port, 0, m, n);
    if (sent < n) rte_pktmbuf_free_bulk(&m[sent], n - sent);
    return sent;
}

/* Receives up to n frames: their data pointers and lengths go to ptrs/lens, the mbufs to
 * bufs, to be freed with epx_free_bulk once read. */
uint16_t epx_rx(uint16_t port, void **bufs, const uint8_t **ptrs, uint16_t *lens, uint16_t n) {
    uint16_t got = rte_eth_rx_burst(port, 0, (struct rte_mbuf **)bufs, n);
    for (uint16_t i = 0; i < got; i++) {
        struct rte_mbuf *m = bufs[i];
        ptrs[i] = rte_pktmbuf_mtod(m, const uint8_t *);
        lens[i] = rte_pktmbuf_data_len(m);
    }
    return got;
}

void epx_free_bulk(void **bufs, uint16_t n) { rte_pktmbuf_free_bulk((struct rte_mbuf **)bufs, n); }
