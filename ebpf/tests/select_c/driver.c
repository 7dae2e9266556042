/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Host driver for ebpf/tests/select_c.rs: runs the kernel program's copy of
 * the selection arithmetic (bpf/lb_select.h) on the IPv4 addresses read
 * from stdin, one dotted quad per line, and prints for each
 * "<hash as 16 hex digits> <home slot> <stride>". The address reaches
 * lb_client_hash in network byte order, as iph->saddr does in the program.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "lb_select.h"

int main(void)
{
	char line[64];

	while (fgets(line, sizeof(line), stdin)) {
		struct in_addr a;
		__u64 h;

		line[strcspn(line, "\r\n")] = 0;
		if (inet_pton(AF_INET, line, &a) != 1) {
			fprintf(stderr, "not an IPv4 address: '%s'\n", line);
			return 2;
		}
		h = lb_client_hash(a.s_addr);
		printf("%016llx %u %u\n", (unsigned long long)h, lb_maglev_home(h),
		       lb_maglev_stride(h));
	}
	return ferror(stdin) ? 1 : 0;
}
