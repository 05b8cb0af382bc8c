// The agents service's own logic, free of sockets and SQL: text
// normalisation for search, handoff keywords, lead capture, the secret
// box for LLM API keys, and the OpenAI chat/completions wire format.
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "agents.h"

// Decodes one code point at p (len bytes left); returns its length, or 0
// for an invalid sequence.
static size_t
utf8_next(const unsigned char *p, size_t len, uint32_t *cp)
{
	size_t n;

	if (p[0] < 0x80) {
		*cp = p[0];
		return 1;
	}
	if (p[0] >= 0xC2 && p[0] <= 0xDF)
		n = 2;
	else if (p[0] >= 0xE0 && p[0] <= 0xEF)
		n = 3;
	else if (p[0] >= 0xF0 && p[0] <= 0xF4)
		n = 4;
	else
		return 0;
	if (n > len)
		return 0;
	*cp = p[0] & (0xFF >> (n + 1));
	for (size_t k = 1; k < n; k++) {
		if ((p[k] & 0xC0) != 0x80)
			return 0;
		*cp = (*cp << 6) | (p[k] & 0x3F);
	}
	return n;
}

// Latin-1 letters U+00C0..U+00FF folded to ASCII ("" for the two signs).
static const char *const latin1_fold[64] = {
	"a", "a", "a", "a", "a",  "a",  "ae", "c", "e", "e", "e",  "e", "i",
	"i", "i", "i", "d", "n",  "o",  "o",  "o", "o", "o", "",   "o", "u",
	"u", "u", "u", "y", "th", "ss", "a",  "a", "a", "a", "a",  "a", "ae",
	"c", "e", "e", "e", "e",  "i",  "i",  "i", "i", "d", "n",  "o", "o",
	"o", "o", "o", "",  "o",  "u",  "u",  "u", "u", "y", "th", "y",
};

// True for code points that separate words: punctuation, symbols, emoji,
// joiners and variation selectors.
static bool
is_separator(uint32_t cp)
{
	return cp < 0xC0 || (cp >= 0x2000 && cp <= 0x2BFF) ||
	       (cp >= 0x3000 && cp <= 0x303F) ||
	       (cp >= 0xFE00 && cp <= 0xFE0F) ||
	       (cp >= 0x1F000 && cp <= 0x1FAFF) || cp >= 0xE0000 ||
	       cp == 0xD7 || cp == 0xF7;
}

char *
agents_text_normalize(pl_arena *a, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len = strlen(s), i = 0, o = 0;
	char *out = pl_arena_alloc(a, len * 2 + 2);
	bool space = true; // no leading space

	if (out == NULL)
		return NULL;
	while (i < len) {
		uint32_t cp;
		size_t n = utf8_next(p + i, len - i, &cp);

		if (n == 0) {
			n = 1;
			cp = ' ';
		}
		if (cp < 0x80 && isalnum((int)cp)) {
			out[o++] = (char)tolower((int)cp);
			space = false;
		} else if (cp >= 0xC0 && cp <= 0xFF &&
		           latin1_fold[cp - 0xC0][0]) {
			const char *f = latin1_fold[cp - 0xC0];
			size_t fl = strlen(f);
			memcpy(out + o, f, fl);
			o += fl;
			space = false;
		} else if (is_separator(cp)) {
			if (!space)
				out[o++] = ' ';
			space = true;
		} else {
			memcpy(out + o, p + i, n);
			o += n;
			space = false;
		}
		i += n;
	}
	if (o > 0 && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
	return out;
}

static const char *const stop_words[] = {
	// English
	"a",
	"about",
	"am",
	"an",
	"and",
	"any",
	"are",
	"as",
	"at",
	"be",
	"by",
	"can",
	"could",
	"did",
	"do",
	"does",
	"for",
	"from",
	"have",
	"has",
	"he",
	"hello",
	"her",
	"here",
	"hey",
	"hi",
	"how",
	"i",
	"if",
	"im",
	"in",
	"is",
	"it",
	"its",
	"me",
	"my",
	"no",
	"not",
	"of",
	"on",
	"or",
	"our",
	"please",
	"pls",
	"she",
	"should",
	"so",
	"some",
	"that",
	"the",
	"their",
	"them",
	"there",
	"they",
	"this",
	"to",
	"u",
	"us",
	"was",
	"we",
	"were",
	"what",
	"when",
	"where",
	"which",
	"who",
	"why",
	"will",
	"with",
	"would",
	"you",
	"your",
	"ur",
	// Spanish
	"al",
	"como",
	"con",
	"cual",
	"cuales",
	"cuando",
	"de",
	"del",
	"donde",
	"el",
	"en",
	"es",
	"esa",
	"ese",
	"eso",
	"esta",
	"este",
	"estos",
	"hay",
	"hola",
	"la",
	"las",
	"le",
	"les",
	"lo",
	"los",
	"me",
	"mi",
	"mis",
	"muy",
	"nos",
	"o",
	"para",
	"pero",
	"por",
	"porfa",
	"puedo",
	"que",
	"quien",
	"se",
	"si",
	"son",
	"su",
	"sus",
	"te",
	"tu",
	"tus",
	"un",
	"una",
	"unas",
	"unos",
	"usted",
	"ustedes",
	"y",
	"yo",
	"favor",
	"gracias",
	"buenas",
	"buenos",
	"dias",
	"tardes",
	"noches",
	NULL,
};

bool
agents_stop_word(const char *w, size_t n)
{
	for (size_t i = 0; stop_words[i] != NULL; i++) {
		if (strlen(stop_words[i]) == n &&
		    memcmp(stop_words[i], w, n) == 0)
			return true;
	}
	return false;
}

char *
agents_text_terms(pl_arena *a, const char *norm)
{
	size_t len = strlen(norm), o = 0, nterms = 0;
	char *out = pl_arena_alloc(a, len * 2 + 8);
	const char *starts[32];
	size_t lens[32];

	if (out == NULL)
		return NULL;
	out[0] = '\0';
	for (const char *p = norm; *p != '\0' && nterms < 32;) {
		const char *e = strchr(p, ' ');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		bool dup = false;

		if (n > 0 && !agents_stop_word(p, n)) {
			for (size_t k = 0; k < nterms; k++)
				dup = dup || (lens[k] == n &&
				              memcmp(starts[k], p, n) == 0);
			if (!dup) {
				if (o > 0) {
					memcpy(out + o, " or ", 4);
					o += 4;
				}
				memcpy(out + o, p, n);
				o += n;
				starts[nterms] = p;
				lens[nterms++] = n;
			}
		}
		p += n;
		while (*p == ' ')
			p++;
	}
	out[o] = '\0';
	return out;
}

const char *const agents_default_handoff_keywords[] = {
	"human",   "humano",         "agent",       "agente",
	"persona", "person",         "operator",    "operador",
	"asesor",  "representative", "real person", NULL,
};

const char *
agents_handoff_keyword(pl_arena *a, const char *norm, char *const *keywords,
                       size_t n)
{
	char *hay = pl_arena_printf(a, " %s ", norm);

	if (hay == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		char *kw = agents_text_normalize(a, keywords[i]);
		char *needle;

		if (kw == NULL || kw[0] == '\0')
			continue;
		needle = pl_arena_printf(a, " %s ", kw);
		if (needle != NULL && strstr(hay, needle) != NULL)
			return keywords[i];
	}
	return NULL;
}

const char *
agents_default_fallback(const char *language)
{
	if (language != NULL && strncmp(language, "es", 2) == 0)
		return "No estoy seguro de eso. Una persona de nuestro equipo "
		       "te responderá pronto.";
	return "I'm not sure about that. A person from our team will get back "
	       "to you soon.";
}

// Lead capture.

static bool
email_local(int c)
{
	return isalnum(c) || c == '.' || c == '_' || c == '%' || c == '+' ||
	       c == '-';
}

static bool
email_domain(int c)
{
	return isalnum(c) || c == '.' || c == '-';
}

static char *
find_email(pl_arena *a, const char *t)
{
	for (const char *at = strchr(t, '@'); at != NULL;
	     at = strchr(at + 1, '@')) {
		const char *s = at, *e = at + 1;

		while (s > t && email_local((unsigned char)s[-1]))
			s--;
		while (email_domain((unsigned char)*e))
			e++;
		while (e > at + 1 && (e[-1] == '.' || e[-1] == '-'))
			e--;
		if (s == at || e == at + 1)
			continue;
		const char *dot = memchr(at + 1, '.', (size_t)(e - at - 1));
		if (dot == NULL || dot == at + 1)
			continue;
		char *m = pl_arena_strndup(a, s, (size_t)(e - s));
		for (char *q = m; q && *q; q++)
			*q = (char)tolower((unsigned char)*q);
		return m;
	}
	return NULL;
}

static char *
find_phone(pl_arena *a, const char *t)
{
	for (const char *p = t; *p != '\0'; p++) {
		char digits[20];
		size_t nd = 0;
		bool plus = false, too_long = false;
		const char *q;

		if (*p != '+' && !isdigit((unsigned char)*p))
			continue;
		if (p > t && (isalnum((unsigned char)p[-1]) || p[-1] == '@' ||
		              p[-1] == '.' || p[-1] == '_'))
			continue;
		if (*p == '+')
			plus = true;
		for (q = plus ? p + 1 : p; *q != '\0'; q++) {
			if (isdigit((unsigned char)*q)) {
				if (nd < sizeof(digits) - 1)
					digits[nd++] = *q;
				else
					too_long = true;
			} else if (*q == ' ' || *q == '-' || *q == '.' ||
			           *q == '(' || *q == ')') {
				if (q[1] == ' ' && q[0] == ' ')
					break;
			} else {
				break;
			}
		}
		// A digit run glued to letters or '@' is not a phone number.
		if (isalpha((unsigned char)*q) || *q == '@') {
			p = q;
			continue;
		}
		if (!too_long && nd >= 8 && nd <= 15) {
			digits[nd] = '\0';
			return pl_arena_printf(a, "%s%s", plus ? "+" : "",
			                       digits);
		}
		p = q > p ? q - 1 : p;
	}
	return NULL;
}

static bool
is_upper_start(const unsigned char *p)
{
	// ASCII capitals, or Latin-1 capitals À..Þ encoded as C3 80..9E.
	return isupper(*p) || (p[0] == 0xC3 && p[1] >= 0x80 && p[1] <= 0x9E);
}

static bool
is_word_byte(unsigned char c)
{
	return isalpha(c) || c >= 0x80 || c == '\'' || c == '-';
}

static char *
find_name(pl_arena *a, const char *t)
{
	static const struct {
		const char *pat;
		bool need_capital;
	} pats[] = {
		{ "my name is ", false },   { "me llamo ", false },
		{ "mi nombre es ", false }, { "i'm ", true },
		{ "i am ", true },          { "soy ", true },
		{ "this is ", true },       { "name: ", false },
		{ "nombre: ", false },
	};
	size_t len = strlen(t);

	for (size_t k = 0; k < sizeof(pats) / sizeof(pats[0]); k++) {
		size_t pl = strlen(pats[k].pat);

		for (size_t i = 0; i + pl <= len; i++) {
			const unsigned char *p;
			const char *start, *end;
			int words = 0;

			if (strncasecmp(t + i, pats[k].pat, pl) != 0 ||
			    (i > 0 && isalpha((unsigned char)t[i - 1])))
				continue;
			p = (const unsigned char *)t + i + pl;
			start = end = (const char *)p;
			while (words < 3 && *p != '\0') {
				const unsigned char *w = p;
				bool need = words > 0 || pats[k].need_capital;

				if (!is_word_byte(*w) ||
				    (need && !is_upper_start(w)))
					break;
				while (is_word_byte(*p))
					p++;
				end = (const char *)p;
				words++;
				if (*p != ' ')
					break;
				p++;
			}
			if (words > 0 && end - start >= 2)
				return pl_arena_strndup(a, start,
				                        (size_t)(end - start));
		}
	}
	return NULL;
}

void
agents_lead_find(pl_arena *a, const char *text, agents_found_lead *out)
{
	out->email = find_email(a, text);
	out->phone = find_phone(a, text);
	out->name = find_name(a, text);
}

// Page tokens.

char *
agents_token_encode(pl_arena *a, const char *cursor)
{
	size_t n = strlen(cursor);
	size_t cap = sodium_base64_ENCODED_LEN(
	        n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char *out = pl_arena_alloc(a, cap);

	if (out == NULL)
		return NULL;
	return sodium_bin2base64(out, cap, (const unsigned char *)cursor, n,
	                         sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

char *
agents_token_decode(pl_arena *a, const char *token)
{
	size_t len = strlen(token), n = 0;
	char *out;

	if (len == 0 || len > 512 || (out = pl_arena_alloc(a, len + 1)) == NULL)
		return NULL;
	if (sodium_base642bin((unsigned char *)out, len, token, len, NULL, &n,
	                      NULL,
	                      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
		return NULL;
	out[n] = '\0';
	for (size_t i = 0; i < n; i++) {
		if (!isprint((unsigned char)out[i]))
			return NULL;
	}
	return out;
}

// The LLM wire format.

static json_t *
tool(const char *name, const char *desc, json_t *props, json_t *required)
{
	return json_pack("{s:s, s:{s:s, s:s, s:{s:s, s:o, s:o}}}", "type",
	                 "function", "function", "name", name, "description",
	                 desc, "parameters", "type", "object", "properties",
	                 props, "required", required);
}

static json_t *
tools(void)
{
	json_t *t = json_array();

	json_array_append_new(
	        t,
	        tool("handoff_to_human",
	             "Hand the conversation to a person of the team when the "
	             "customer asks for one or you cannot help.",
	             json_pack("{s:{s:s, s:s}}", "reason", "type", "string",
	                       "description", "why a person is needed"),
	             json_pack("[s]", "reason")));
	json_array_append_new(
	        t, tool("capture_lead",
	                "Record the customer's contact details when they give "
	                "them.",
	                json_pack("{s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s}}",
	                          "name", "type", "string", "email", "type",
	                          "string", "phone", "type", "string", "notes",
	                          "type", "string"),
	                json_array()));
	json_array_append_new(
	        t,
	        tool("create_order",
	             "Propose an order for a person of the team to confirm.",
	             json_pack("{s:{s:s, s:{s:s, s:{s:{s:s}, s:{s:s}, s:{s:s}, "
	                       "s:{s:s}}}}, s:{s:s}, s:{s:s}}",
	                       "items", "type", "array", "items", "type",
	                       "object", "properties", "sku", "type", "string",
	                       "name", "type", "string", "quantity", "type",
	                       "integer", "unit_price_minor", "type", "integer",
	                       "currency", "type", "string", "address", "type",
	                       "string"),
	             json_pack("[s]", "items")));
	return t;
}

char *
agents_llm_request(const agents_llm_input *in)
{
	json_t *msgs = json_array(), *body;
	char *sys, *out;
	size_t cap = 256 + strlen(in->system_prompt);
	FILE *f;

	for (size_t i = 0; i < in->n_entries; i++)
		cap += strlen(in->entries[i].question) +
		       strlen(in->entries[i].answer) + 16;
	if ((f = open_memstream(&sys, &cap)) == NULL) {
		json_decref(msgs);
		return NULL;
	}
	fputs(in->system_prompt[0] ? in->system_prompt
	                           : "You are a helpful customer-service "
	                             "assistant. Answer briefly.",
	      f);
	if (in->language != NULL && in->language[0] != '\0')
		fprintf(f, "\n\nAnswer in the language \"%s\".", in->language);
	if (in->contact_name != NULL && in->contact_name[0] != '\0')
		fprintf(f, "\n\nThe customer's name is %s.", in->contact_name);
	if (in->n_entries > 0) {
		fputs("\n\nUse this knowledge when it helps:", f);
		for (size_t i = 0; i < in->n_entries; i++)
			fprintf(f, "\nQ: %s\nA: %s", in->entries[i].question,
			        in->entries[i].answer);
	}
	fclose(f);
	json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system",
	                                      "content", sys));
	free(sys);
	for (size_t i = 0; i < in->n_history; i++) {
		const char *role =
		        in->history[i]->role ==
		                        PARLEY__AGENTS__V1__MESSAGE_ROLE__MESSAGE_ROLE_ASSISTANT
		                ? "assistant"
		                : "user";
		json_array_append_new(msgs, json_pack("{s:s, s:s}", "role",
		                                      role, "content",
		                                      in->history[i]->content));
	}
	json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user",
	                                      "content", in->text));
	body = json_pack("{s:s, s:o, s:f, s:i, s:o, s:s}", "model", in->model,
	                 "messages", msgs, "temperature", in->temperature,
	                 "max_tokens",
	                 in->max_tokens > 0 ? in->max_tokens : 512, "tools",
	                 tools(), "tool_choice", "auto");
	if (body == NULL)
		return NULL;
	out = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	return out;
}

static char *
jstr(pl_arena *a, json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_string(v) ? pl_arena_strdup(a, json_string_value(v))
	                         : NULL;
}

static char *
json_text(pl_arena *a, json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY), *r;

	if (s == NULL)
		return NULL;
	r = pl_arena_strdup(a, s);
	free(s);
	return r;
}

static void
apply_tool(pl_arena *a, const char *name, json_t *args, agents_llm_output *out)
{
	if (strcmp(name, "handoff_to_human") == 0) {
		out->handoff = true;
		out->handoff_reason = jstr(a, args, "reason");
	} else if (strcmp(name, "capture_lead") == 0) {
		ag_lead *l = pl_arena_zalloc(a, sizeof(*l));
		json_t *extra = json_deep_copy(args);
		char *s;

		if (l == NULL || extra == NULL) {
			json_decref(extra);
			return;
		}
		parley__agents__v1__captured_lead__init(l);
		if ((s = jstr(a, args, "name")) != NULL)
			l->name = s;
		if ((s = jstr(a, args, "email")) != NULL)
			l->email = s;
		if ((s = jstr(a, args, "phone")) != NULL)
			l->phone = s;
		json_object_del(extra, "name");
		json_object_del(extra, "email");
		json_object_del(extra, "phone");
		if (json_object_size(extra) > 0) {
			l->extra = pl_arena_zalloc(a, sizeof(*l->extra));
			if (l->extra != NULL) {
				parley__rpc__v1__json__init(l->extra);
				l->extra->text = json_text(a, extra);
			}
		}
		json_decref(extra);
		out->lead = l;
	} else if (strcmp(name, "create_order") == 0) {
		ag_action *act = pl_arena_zalloc(a, sizeof(*act));
		ag_action **v =
		        pl_arena_alloc(a, sizeof(*v) * (out->n_actions + 1));
		json_t *items = json_object_get(args, "items");

		if (act == NULL || v == NULL || !json_is_array(items))
			return;
		parley__agents__v1__proposed_action__init(act);
		act->kind = "order_confirmation";
		act->summary = pl_arena_printf(a, "order of %zu item(s)",
		                               json_array_size(items));
		act->payload = pl_arena_zalloc(a, sizeof(*act->payload));
		if (act->payload != NULL) {
			parley__rpc__v1__json__init(act->payload);
			act->payload->text = json_text(a, args);
		}
		if (out->n_actions > 0)
			memcpy(v, out->actions, sizeof(*v) * out->n_actions);
		v[out->n_actions++] = act;
		out->actions = v;
	} else {
		out->ignored_tools =
		        out->ignored_tools
		                ? pl_arena_printf(a, "%s,%s",
		                                  out->ignored_tools, name)
		                : pl_arena_strdup(a, name);
	}
}

// A usage count as the provider says it, within 0..AGENTS_MAX_TOKENS: a
// negative count (which would skip the ai_tokens reservation) is 0, a
// larger one the most (it would not fit the int columns and the sums).
static int
token_count(json_t *v)
{
	json_int_t n = json_integer_value(v);

	if (n < 0)
		return 0;
	return n > AGENTS_MAX_TOKENS ? AGENTS_MAX_TOKENS : (int)n;
}

int
agents_llm_parse(pl_arena *a, const char *body, size_t len,
                 agents_llm_output *out, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root, *choice, *msg, *content, *calls, *usage;
	int rv = PL_INTERNAL;

	memset(out, 0, sizeof(*out));
	if (body == NULL || len == 0) {
		snprintf(err, errlen, "empty response");
		return PL_INTERNAL;
	}
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL) {
		snprintf(err, errlen, "malformed JSON at offset %d",
		         je.position);
		return PL_INTERNAL;
	}
	choice = json_array_get(json_object_get(root, "choices"), 0);
	msg = json_object_get(choice, "message");
	if (!json_is_object(msg)) {
		snprintf(err, errlen, "no choices[0].message in the response");
		goto out_decref;
	}
	content = json_object_get(msg, "content");
	if (json_is_string(content) && json_string_length(content) > 0)
		out->content = pl_arena_strdup(a, json_string_value(content));
	else if (content != NULL && !json_is_null(content) &&
	         !json_is_string(content)) {
		snprintf(err, errlen, "choices[0].message.content is not text");
		goto out_decref;
	}
	calls = json_object_get(msg, "tool_calls");
	for (size_t i = 0; json_is_array(calls) && i < json_array_size(calls);
	     i++) {
		json_t *fn =
		        json_object_get(json_array_get(calls, i), "function");
		const char *name =
		        json_string_value(json_object_get(fn, "name"));
		const char *args =
		        json_string_value(json_object_get(fn, "arguments"));
		json_t *ja;

		if (name == NULL)
			continue;
		ja = json_loads(args ? args : "{}", 0, NULL);
		if (!json_is_object(ja)) {
			json_decref(ja);
			ja = json_object();
		}
		apply_tool(a, name, ja, out);
		json_decref(ja);
	}
	out->model = jstr(a, root, "model");
	usage = json_object_get(root, "usage");
	out->tokens_in = token_count(json_object_get(usage, "prompt_tokens"));
	out->tokens_out =
	        token_count(json_object_get(usage, "completion_tokens"));
	rv = PL_OK;
out_decref:
	json_decref(root);
	return rv;
}
