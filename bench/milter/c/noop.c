/*
 * The floor of bench/milter/run.sh in C, on Sendmail's libmilter: a milter
 * that negotiates what relayguard's milter negotiates (passed in by
 * run.sh from "noopmilter -print") and decides nothing: an unauthenticated
 * SMTP client's mail is accepted at MAIL FROM, as relayguard accepts it;
 * every other message is accepted at end of message.
 *
 *   cc -O2 -o noopc noop.c -lmilter -lpthread
 *   noopc unix:/tmp/noopc.sock ACTIONS PROTOCOL 'STAGE:macro macro' ...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libmilter/mfapi.h>

static unsigned long actions, protocol;
static int nstages;
static int stages[16];
static char *macros[16];

static sfsistat negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2, unsigned long f3,
			  unsigned long *pf0, unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
	int i;
	*pf0 = actions & f0;
	*pf1 = protocol & f1;
	*pf2 = 0;
	*pf3 = 0;
	for (i = 0; i < nstages; i++)
		if (macros[i][0] != '\0' && smfi_setsymlist(ctx, stages[i], macros[i]) != MI_SUCCESS)
			fprintf(stderr, "noopc: setsymlist %d failed\n", stages[i]);
	return SMFIS_CONTINUE;
}

static sfsistat on_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *addr) { return SMFIS_NOREPLY; }

static sfsistat envfrom(SMFICTX *ctx, char **argv)
{
	char *auth = smfi_getsymval(ctx, "{auth_authen}");
	char *qid = smfi_getsymval(ctx, "i");
	if ((auth == NULL || *auth == '\0') && (qid == NULL || *qid == '\0'))
		return SMFIS_ACCEPT;
	return SMFIS_CONTINUE;
}

static sfsistat envrcpt(SMFICTX *ctx, char **argv)
{
	return (protocol & SMFIP_NR_RCPT) ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat header(SMFICTX *ctx, char *name, char *value) { return SMFIS_NOREPLY; }

static sfsistat eom(SMFICTX *ctx) { return SMFIS_ACCEPT; }

int main(int argc, char **argv)
{
	struct smfiDesc desc = {
		.xxfi_name = "noopc",
		.xxfi_version = SMFI_VERSION,
		.xxfi_flags = 0,
		.xxfi_connect = on_connect,
		.xxfi_envfrom = envfrom,
		.xxfi_envrcpt = envrcpt,
		.xxfi_header = header,
		.xxfi_eom = eom,
		.xxfi_negotiate = negotiate,
	};
	int i;
	if (argc < 4) {
		fprintf(stderr, "usage: noopc SOCKET ACTIONS PROTOCOL [STAGE:macros]...\n");
		return 2;
	}
	actions = strtoul(argv[2], NULL, 0);
	protocol = strtoul(argv[3], NULL, 0);
	desc.xxfi_flags = actions;
	for (i = 4; i < argc && nstages < 16; i++) {
		char *c = strchr(argv[i], ':');
		if (c == NULL)
			continue;
		*c = '\0';
		stages[nstages] = atoi(argv[i]);
		macros[nstages++] = c + 1;
	}
	if (smfi_setconn(argv[1]) == MI_FAILURE || smfi_register(desc) == MI_FAILURE) {
		fprintf(stderr, "noopc: cannot set up %s\n", argv[1]);
		return 1;
	}
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
