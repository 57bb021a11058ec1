/* pvwriter: a live writer whose acknowledged writes can be verified after the fact.
 *
 *   pvwriter write FILE ACKFILE [BATCH]  append 64-byte records, fdatasync every BATCH (1)
 *   pvwriter writedev DEV ACKFILE        4 KiB O_DIRECT records at increasing offsets, wrapping
 *   pvwriter verify FILE ACKED           records 0..K contiguous and valid, K+1 >= ACKED
 *   pvwriter verifydev DEV ACKED         every slot holds its latest acked record or a newer one
 *   pvwriter maxrss CMD [ARG...]         runs CMD, then prints "maxrss_kb=K" (its peak resident
 *                                        memory, from wait4; busybox time -v shows 4x the truth)
 *   pvwriter hog MIB                     touches MIB MiB for ever (memory pressure for swap)
 *   pvwriter sum FILE|-                  XXH64 of its content in hex: the tests' digest of
 *                                        disks and LVs (sha256sum reads 22 MB/s under TCG)
 *   pvwriter newpgrp CMD [ARG...]        execs CMD in a process group of its own, whose parent
 *                                        (the shell) is in the session: stop signals (SIGTSTP)
 *                                        then stop it, as in a terminal's job (the kernel drops
 *                                        them for an orphaned group, and busybox sh without a
 *                                        terminal has no job control)
 *
 * A record is acknowledged only once the fdatasync covering it has returned. After each
 * acknowledgement ACKFILE (meant for tmpfs) is rewritten in place with
 * "acked=N maxstall_us=M": N records (seq 0..N-1) are durable, M is the longest single
 * write+fdatasync. Both only grow, so the line never shrinks and needs no truncate.
 * SIGTERM/SIGINT finish the record in flight, update ACKFILE and exit 0.
 *
 * Built with gcc -static so it runs in the initramfs without libraries.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <linux/fs.h>
#include <time.h>
#include <unistd.h>

#define REC 64
#define DEVREC 4096

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	while (n--) { h ^= *p++; h *= 0x100000001b3ULL; }
	return h;
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Layout of a record of n bytes: seq (u64 LE) | payload from seq | fnv1a(seq+payload) (u64). */
static void fill(unsigned char *r, size_t n, uint64_t seq)
{
	uint64_t s = seq, h;
	memcpy(r, &seq, 8);
	for (size_t i = 8; i < n - 8; i += 8) {
		uint64_t v = splitmix(&s);
		memcpy(r + i, &v, 8);
	}
	h = fnv1a(r, n - 8);
	memcpy(r + n - 8, &h, 8);
}

/* 0 if r is exactly the record for its own seq; *seq gets the seq it claims. */
static int check(const unsigned char *r, size_t n, uint64_t *seq)
{
	unsigned char want[DEVREC];
	memcpy(seq, r, 8);
	fill(want, n, *seq);
	return memcmp(r, want, n) != 0;
}

static uint64_t now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static void die(const char *what)
{
	fprintf(stderr, "pvwriter: %s: %s\n", what, strerror(errno));
	exit(2);
}

/* When the longest stall began (CLOCK_MONOTONIC, ms: the clock of /proc/uptime). */
static uint64_t maxstall_at;

static void ack(int afd, uint64_t acked, uint64_t maxstall)
{
	char line[120];
	int n = snprintf(line, sizeof line, "acked=%llu maxstall_us=%llu maxstall_at_ms=%llu\n",
			 (unsigned long long)acked, (unsigned long long)maxstall,
			 (unsigned long long)maxstall_at);
	if (pwrite(afd, line, n, 0) != n) die("ackfile");
}

static void signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };  /* no SA_RESTART: stop a blocked write */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
}

/* write() that finishes partial writes; a signal only stops us between records. */
static int write_all(int fd, const unsigned char *p, size_t n, off_t off, int positional)
{
	while (n) {
		ssize_t w = positional ? pwrite(fd, p, n, off) : write(fd, p, n);
		if (w < 0) { if (errno == EINTR) continue; return -1; }
		p += w; n -= w; off += w;
	}
	return 0;
}

static int cmd_write(const char *file, const char *ackfile, int batch)
{
	unsigned char buf[REC * 64];
	int fd = open(file, O_WRONLY | O_APPEND | O_CREAT, 0644);
	int afd = open(ackfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	struct stat st;
	uint64_t seq, maxstall = 0;

	if (fd < 0) die(file);
	if (afd < 0) die(ackfile);
	if (batch < 1 || batch > 64) { fprintf(stderr, "pvwriter: batch must be 1..64\n"); return 2; }
	if (fstat(fd, &st) || st.st_size % REC) {
		fprintf(stderr, "pvwriter: %s: size %lld is not a whole number of records\n",
			file, (long long)st.st_size);
		return 2;
	}
	seq = st.st_size / REC;  /* continue an existing log, e.g. after a crash test */
	signals();
	ack(afd, seq, 0);
	while (!stop) {
		uint64_t t0 = now_us(), dt;
		for (int i = 0; i < batch; i++) fill(buf + i * REC, REC, seq + i);
		if (write_all(fd, buf, (size_t)batch * REC, 0, 0)) die("write");
		while (fdatasync(fd)) if (errno != EINTR) die("fdatasync");
		dt = now_us() - t0;
		if (dt > maxstall) maxstall = dt, maxstall_at = t0 / 1000;
		seq += batch;
		ack(afd, seq, maxstall);
	}
	printf("pvwriter: stopped, acked=%llu maxstall_us=%llu\n",
	       (unsigned long long)seq, (unsigned long long)maxstall);
	return 0;
}

static uint64_t dev_slots(int fd, const char *dev)
{
	uint64_t bytes;
	if (ioctl(fd, BLKGETSIZE64, &bytes)) die(dev);
	if (bytes < DEVREC) { fprintf(stderr, "pvwriter: %s too small\n", dev); exit(2); }
	return bytes / DEVREC;
}

static int cmd_writedev(const char *dev, const char *ackfile)
{
	unsigned char *buf;
	int fd = open(dev, O_WRONLY | O_DIRECT);
	int afd = open(ackfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	uint64_t seq = 0, maxstall = 0, n;

	if (fd < 0) die(dev);
	if (afd < 0) die(ackfile);
	if (posix_memalign((void **)&buf, DEVREC, DEVREC)) die("memalign");
	n = dev_slots(fd, dev);
	signals();
	ack(afd, 0, 0);
	while (!stop) {
		uint64_t t0 = now_us(), dt;
		fill(buf, DEVREC, seq);
		if (write_all(fd, buf, DEVREC, (off_t)(seq % n) * DEVREC, 1)) die("write");
		while (fdatasync(fd)) if (errno != EINTR) die("fdatasync");  /* flush the disk cache */
		dt = now_us() - t0;
		if (dt > maxstall) maxstall = dt, maxstall_at = t0 / 1000;
		ack(afd, ++seq, maxstall);
	}
	printf("pvwriter: stopped, acked=%llu maxstall_us=%llu\n",
	       (unsigned long long)seq, (unsigned long long)maxstall);
	return 0;
}

static int cmd_verify(const char *file, uint64_t acked)
{
	unsigned char r[REC];
	FILE *f = fopen(file, "r");
	uint64_t k = 0, seq, bad_seq = 0, tail = 0;
	size_t got;
	int bad = 0;

	if (!f) die(file);
	while ((got = fread(r, 1, REC, f)) == REC && !check(r, REC, &seq) && seq == k) k++;
	if (got) { bad = 1; bad_seq = got == REC ? seq : 0; tail = got; }
	/* Past the first bad record only unacknowledged junk may follow: no valid record. */
	while (bad && (got = fread(r, 1, REC, f)) > 0) {
		tail += got;
		if (got == REC && !check(r, REC, &seq) && seq == k + tail / REC - 1) {
			printf("pvwriter: hole: record %llu is bad but record %llu follows intact\n",
			       (unsigned long long)k, (unsigned long long)seq);
			return 1;
		}
	}
	if (k < acked) {
		if (bad)
			printf("pvwriter: first bad record %llu (claims seq %llu, %zu bytes), acked=%llu\n",
			       (unsigned long long)k, (unsigned long long)bad_seq,
			       tail < REC ? (size_t)tail : (size_t)REC, (unsigned long long)acked);
		else
			printf("pvwriter: only %llu records, acked=%llu\n",
			       (unsigned long long)k, (unsigned long long)acked);
		return 1;
	}
	if (tail) printf("records=%llu ok tail_bytes=%llu\n", (unsigned long long)k, (unsigned long long)tail);
	else printf("records=%llu ok\n", (unsigned long long)k);
	return 0;
}

/* Writes are sequential with one in flight, so: slot i holds a valid record of residue i
 * at least as new as the last acked one of that residue; only the slot of the write that
 * was in flight (max seen + 1) may be torn. */
static int cmd_verifydev(const char *dev, uint64_t acked)
{
	unsigned char *buf;
	int fd = open(dev, O_RDONLY | O_DIRECT);
	uint64_t n, max = 0, seq, need = acked, torn = UINT64_MAX;
	int any = 0;

	if (fd < 0) die(dev);
	if (posix_memalign((void **)&buf, DEVREC, DEVREC)) die("memalign");
	n = dev_slots(fd, dev);
	if (need > n) need = n;
	for (uint64_t i = 0; i < need; i++) {
		uint64_t want = acked - 1 - ((acked - 1 - i) % n);  /* last acked seq of residue i */
		if (pread(fd, buf, DEVREC, (off_t)i * DEVREC) != DEVREC) die("read");
		if (check(buf, DEVREC, &seq) || seq % n != i) {
			if (torn != UINT64_MAX) {
				printf("pvwriter: slots %llu and %llu bad\n",
				       (unsigned long long)torn, (unsigned long long)i);
				return 1;
			}
			torn = i;
			continue;
		}
		if (seq < want) {
			printf("pvwriter: slot %llu holds seq %llu, acked seq %llu lost\n",
			       (unsigned long long)i, (unsigned long long)seq, (unsigned long long)want);
			return 1;
		}
		if (!any || seq > max) max = seq;
		any = 1;
	}
	if (torn != UINT64_MAX && (!any || (max + 1) % n != torn)) {
		printf("pvwriter: slot %llu bad and it was not the write in flight\n",
		       (unsigned long long)torn);
		return 1;
	}
	printf("records=%llu ok\n", (unsigned long long)(any && max + 1 > acked ? max + 1 : acked));
	return 0;
}

static int cmd_maxrss(char **argv)
{
	struct rusage ru;
	int status;
	pid_t pid = fork();
	if (pid < 0) die("fork");
	if (pid == 0) {
		execvp(argv[0], argv);
		_exit(127);
	}
	if (wait4(pid, &status, 0, &ru) < 0) die("wait4");
	fprintf(stderr, "maxrss_kb=%ld\n", ru.ru_maxrss);   /* Linux: already in KiB */
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Touches MIB MiB of its own, page after page, for ever: more than its cgroup may keep, so
   its pages go to swap and come back all the time. */
static _Noreturn void cmd_hog(long mib)
{
	size_t len = (size_t)mib << 20;
	volatile char *p = malloc(len);
	if (!p) die("malloc");
	for (unsigned char n = 1;; n++)
		for (size_t i = 0; i < len; i += 4096) p[i] = (char)n;
}

/* XXH64 (seed 0), as specified in xxHash's doc/xxhash_spec.md, over a stream. */
#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL
static uint64_t rotl(uint64_t x, int r) { return x << r | x >> (64 - r); }
static uint64_t rd64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint64_t xround(uint64_t acc, uint64_t in) { return rotl(acc + in * P2, 31) * P1; }
static uint64_t merge(uint64_t h, uint64_t v) { return (h ^ xround(0, v)) * P1 + P4; }

static int cmd_sum(const char *path)
{
	static unsigned char buf[(1 << 20) + 32];
	int fd = strcmp(path, "-") ? open(path, O_RDONLY) : 0;
	if (fd < 0) die(path);
	uint64_t v[4] = { P1 + P2, P2, 0, -P1 }, total = 0;
	size_t have = 0;   /* bytes in buf not yet consumed (fewer than 32 between reads) */
	for (;;) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - have);
		if (n < 0 && errno == EINTR) continue;
		if (n < 0) die("read");
		if (n == 0) break;
		have += n, total += n;
		size_t i = 0;
		for (; i + 32 <= have; i += 32)
			for (int l = 0; l < 4; l++) v[l] = xround(v[l], rd64(buf + i + 8 * l));
		memmove(buf, buf + i, have - i);
		have -= i;
	}
	uint64_t h = total >= 32 ? rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18) : P5;
	if (total >= 32)
		for (int l = 0; l < 4; l++) h = merge(h, v[l]);
	h += total;
	size_t i = 0;
	for (; i + 8 <= have; i += 8) h = rotl(h ^ xround(0, rd64(buf + i)), 27) * P1 + P4;
	if (i + 4 <= have) {
		uint32_t w;
		memcpy(&w, buf + i, 4);
		h = rotl(h ^ (uint64_t)w * P1, 23) * P2 + P3;
		i += 4;
	}
	for (; i < have; i++) h = rotl(h ^ buf[i] * P5, 11) * P1;
	h ^= h >> 33, h *= P2, h ^= h >> 29, h *= P3, h ^= h >> 32;
	printf("%016llx\n", (unsigned long long)h);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 4 && !strcmp(argv[1], "write"))
		return cmd_write(argv[2], argv[3], argc > 4 ? atoi(argv[4]) : 1);
	if (argc == 4 && !strcmp(argv[1], "writedev")) return cmd_writedev(argv[2], argv[3]);
	if (argc == 4 && !strcmp(argv[1], "verify")) return cmd_verify(argv[2], strtoull(argv[3], 0, 10));
	if (argc == 4 && !strcmp(argv[1], "verifydev"))
		return cmd_verifydev(argv[2], strtoull(argv[3], 0, 10));
	if (argc >= 3 && !strcmp(argv[1], "maxrss")) return cmd_maxrss(argv + 2);
	if (argc == 3 && !strcmp(argv[1], "hog")) cmd_hog(atol(argv[2]));
	if (argc == 3 && !strcmp(argv[1], "sum")) return cmd_sum(argv[2]);
	if (argc >= 3 && !strcmp(argv[1], "newpgrp")) {
		if (setpgid(0, 0)) { perror("setpgid"); return 2; }
		execvp(argv[2], argv + 2);
		perror(argv[2]);
		return 127;
	}
	fprintf(stderr, "usage: pvwriter write FILE ACKFILE [BATCH] | writedev DEV ACKFILE\n"
			"       pvwriter verify FILE ACKED | verifydev DEV ACKED | maxrss CMD [ARG...]\n"
			"       pvwriter hog MIB | sum FILE | newpgrp CMD [ARG...]\n");
	return 2;
}
