// libFuzzer target for what reaches the agents service from outside
// (services/agents/engine.c, index.c): an OpenAI-compatible server's
// answers, a customer's text (the Reply handler passes only valid UTF-8 on)
// and page tokens. The first byte picks which; the rest is the input.
//
// Contracts checked besides "no crash, no leak":
//   answers  PL_OK or PL_INTERNAL with a reason; text fields valid UTF-8;
//            token counts within 0..AGENTS_MAX_TOKENS; a lead's extras and
//            an order's payload are JSON
//   text     normalised text is valid UTF-8 and normalising it again
//            changes nothing; a found email has an '@', a found phone is
//            digits (after an optional '+'); a search over a small index
//            returns at most k hits, scores within 0..1, best first
//   tokens   what decodes encodes back to itself
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agents.h"
#include "pl/log.h"
#include "pl/utf8.h"
#include "fuzz_check.h"

#define ARENA_LIMIT (8u << 20)
#define K           5

static agents_index *ix;

// A pizza shop's questions in two languages: enough for the scorer's
// branches (exact, partial, accents, keywords).
static void
build_index(void)
{
	static const char *const qa[][3] = {
		{ "What are your opening hours?", "From 11 to 23.", "hours" },
		{ "¿Cuál es el horario de apertura?", "De 11 a 23.", "hours" },
		{ "Do you deliver to my address?", "Within 5 km.", "delivery" },
		{ "¿Hacen envíos a domicilio?", "Sí, a 5 km.", "delivery" },
		{ "Is there a gluten free pizza?", "Yes, any pizza.", "menu" },
		{ "¿Tienen pizza sin gluten? 🍕", "Sí.", "menu" },
		{ "How much is a large margherita?", "12 euros.", "price" },
		{ "Can I pay by card?", "Card and cash.", "payment" },
		{ "Where are you?", "Calle Mayor 1, Madrid.", "location" },
		{ "I want to speak to a person", "One moment.", "human" },
	};
	agents_ix_src src[sizeof(qa) / sizeof(qa[0])];
	pl_arena a;

	pl_arena_init(&a, 0, 0);
	for (size_t i = 0; i < sizeof(qa) / sizeof(qa[0]); i++) {
		src[i].id = pl_arena_printf(
		        &a, "00000000-0000-7000-8000-%012zu", i);
		src[i].question = qa[i][0];
		src[i].answer = qa[i][1];
		src[i].intent = qa[i][2];
		src[i].question_norm = agents_text_normalize(&a, qa[i][0]);
		src[i].keywords_norm = agents_text_normalize(&a, qa[i][2]);
		src[i].answer_norm = agents_text_normalize(&a, qa[i][1]);
	}
	ix = agents_index_build(src, sizeof(qa) / sizeof(qa[0]), 1);
	need(ix != NULL, "index built");
	pl_arena_fini(&a);
}

static void
answer(const uint8_t *data, size_t size)
{
	agents_llm_output o;
	char err[256] = "";
	pl_arena a;
	int rv;

	pl_arena_init(&a, 0, ARENA_LIMIT);
	rv = agents_llm_parse(&a, (const char *)data, size, &o, err,
	                      sizeof(err));
	need(rv == PL_OK || rv == PL_INTERNAL, "parse status");
	if (rv != PL_OK) {
		need(err[0] != '\0', "a refusal says why");
		pl_arena_fini(&a);
		return;
	}
	need(o.content == NULL || o.content[0] != '\0',
	     "content is text or none");
	text_ok(o.content, "content is UTF-8");
	text_ok(o.handoff_reason, "handoff reason is UTF-8");
	text_ok(o.model, "model is UTF-8");
	text_ok(o.ignored_tools, "tool names are UTF-8");
	need(o.tokens_in >= 0 && o.tokens_in <= AGENTS_MAX_TOKENS &&
	             o.tokens_out >= 0 && o.tokens_out <= AGENTS_MAX_TOKENS,
	     "token counts in range");
	if (o.lead != NULL) {
		text_ok(o.lead->name, "lead name is UTF-8");
		text_ok(o.lead->email, "lead email is UTF-8");
		text_ok(o.lead->phone, "lead phone is UTF-8");
		if (o.lead->extra != NULL)
			json_ok(o.lead->extra->text, "lead extras are JSON");
	}
	for (size_t i = 0; i < o.n_actions; i++) {
		need(o.actions[i] != NULL && o.actions[i]->kind != NULL,
		     "an action has a kind");
		if (o.actions[i]->payload != NULL)
			json_ok(o.actions[i]->payload->text,
			        "an order's payload is JSON");
	}
	pl_arena_fini(&a);
}

static void
customer_text(const uint8_t *data, size_t size)
{
	agents_ix_hit hits[K];
	agents_found_lead lead;
	char *text, *norm, *again;
	size_t n;
	pl_arena a;

	// The handler refuses what is not UTF-8 or holds a NUL.
	if (!pl_utf8_valid((const char *)data, size) ||
	    memchr(data, '\0', size) != NULL)
		return;
	pl_arena_init(&a, 0, ARENA_LIMIT);
	text = pl_arena_strndup(&a, (const char *)data, size);
	need(text != NULL, "memory");
	norm = agents_text_normalize(&a, text);
	need(norm != NULL, "normalised");
	text_ok(norm, "normalised text is UTF-8");
	again = agents_text_normalize(&a, norm);
	need(again != NULL && strcmp(again, norm) == 0,
	     "normalising twice changes nothing");
	text_ok(agents_text_terms(&a, norm), "terms are UTF-8");
	for (n = 0; agents_default_handoff_keywords[n] != NULL; n++)
		;
	(void)agents_handoff_keyword(
	        &a, norm, (char *const *)agents_default_handoff_keywords, n);
	agents_lead_find(&a, text, &lead);
	if (lead.email != NULL) {
		need(strchr(lead.email, '@') != NULL, "an email has an '@'");
		text_ok(lead.email, "email is UTF-8");
	}
	if (lead.phone != NULL) {
		const char *p = lead.phone + (lead.phone[0] == '+');
		need(*p != '\0' && strspn(p, "0123456789") == strlen(p),
		     "a phone is digits");
	}
	text_ok(lead.name, "name is UTF-8");
	n = agents_index_search(ix, &a, norm, K, hits);
	need(n <= K, "at most k hits");
	for (size_t i = 0; i < n; i++) {
		need(hits[i].score >= 0.0 && hits[i].score <= 1.0,
		     "a score is within 0..1");
		need(i == 0 || hits[i - 1].score >= hits[i].score,
		     "hits best first");
	}
	pl_arena_fini(&a);
}

static void
page_token(const uint8_t *data, size_t size)
{
	pl_arena a;
	char *tok, *cur;

	pl_arena_init(&a, 0, ARENA_LIMIT);
	tok = pl_arena_strndup(&a, (const char *)data, size);
	need(tok != NULL, "memory");
	if ((cur = agents_token_decode(&a, tok)) != NULL) {
		char *back =
		        agents_token_decode(&a, agents_token_encode(&a, cur));
		need(back != NULL && strcmp(back, cur) == 0,
		     "a decoded token encodes back");
	}
	pl_arena_fini(&a);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (ix == NULL) {
		pl_log_init("fuzz", PL_LOG_ERROR);
		build_index();
	}
	if (size == 0)
		return 0;
	switch (data[0] % 3) {
	case 0:
		answer(data + 1, size - 1);
		break;
	case 1:
		customer_text(data + 1, size - 1);
		break;
	default:
		page_token(data + 1, size - 1);
		break;
	}
	return 0;
}
