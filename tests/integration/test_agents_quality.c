// Retrieval quality: a small bilingual FAQ (English and Spanish) and
// questions with typos, missing or extra accents and emoji, answered by
// Reply's retrieval engine. Prints the hit rate and requires >= 90 %.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "agents.h"
#include "pgh.h"
#include "pl/id.h"
#include "svch.h"

#define M(x) "/parley.agents.v1.Agents/" x

static const struct {
	const char *q, *a, *kw, *intent;
} faq[] = {
	{ "What are your opening hours?", "9 to 18, Monday to Saturday.",
	  "schedule open", "hours" },
	{ "How much does shipping cost?", "5 EUR, free above 50 EUR.",
	  "delivery price", "shipping_cost" },
	{ "How long does delivery take?", "2 to 4 working days.",
	  "shipping time days", "delivery_time" },
	{ "Do you ship internationally?", "We ship to the EU and the US.",
	  "abroad countries", "international" },
	{ "How can I track my order?",
	  "Use the link in your confirmation email.", "tracking package",
	  "tracking" },
	{ "What payment methods do you accept?", "Visa, Mastercard, PayPal.",
	  "pay card paypal", "payment" },
	{ "How do I return a product?", "Returns are free within 30 days.",
	  "refund exchange", "returns" },
	{ "Where is your store located?", "Calle Mayor 10, Madrid.",
	  "address location shop", "location" },
	{ "Do you have a discount code?", "Use WELCOME10 for 10% off.",
	  "coupon promo", "discount" },
	{ "Can I cancel my order?", "Yes, before it ships.", "cancel",
	  "cancel" },
	{ "Is there a warranty?", "Two years on every product.", "guarantee",
	  "warranty" },
	{ "Do you sell gift cards?", "Yes, from 10 to 200 EUR.",
	  "gift voucher present", "gift_cards" },
	{ "How do I reset my password?",
	  "Click 'forgot password' on the login page.", "login account",
	  "password" },
	{ "Do you have vegan products?", "Yes, look for the green leaf.",
	  "vegan plant", "vegan" },
	{ "What sizes are available?", "From XS to XXL.", "size small large",
	  "sizes" },
	{ "¿Cuál es el horario de atención?", "De 9 a 18, de lunes a sábado.",
	  "horario abierto", "horario" },
	{ "¿Cuánto cuesta el envío?", "5 EUR, gratis desde 50 EUR.",
	  "envio precio", "costo_envio" },
	{ "¿Cuánto tarda la entrega?", "De 2 a 4 días hábiles.",
	  "entrega dias demora", "tiempo_entrega" },
	{ "¿Hacen envíos internacionales?", "Enviamos a la UE y EE. UU.",
	  "extranjero paises", "internacional" },
	{ "¿Cómo rastreo mi pedido?",
	  "Con el enlace del correo de confirmación.", "seguimiento paquete",
	  "seguimiento" },
	{ "¿Qué formas de pago aceptan?", "Visa, Mastercard y PayPal.",
	  "tarjeta pagar", "formas_pago" },
	{ "¿Cómo devuelvo un producto?",
	  "Las devoluciones son gratis en 30 días.",
	  "devolucion reembolso cambio", "devoluciones" },
	{ "¿Dónde está la tienda?", "Calle Mayor 10, Madrid.",
	  "direccion ubicacion local", "ubicacion" },
	{ "¿Tienen cupones de descuento?", "Usa BIENVENIDA10.",
	  "cupon promocion", "descuento" },
	{ "¿Puedo cancelar mi pedido?", "Sí, antes del envío.",
	  "cancelar anular", "cancelar" },
	{ "¿Tienen garantía?", "Dos años en todos los productos.", "garantia",
	  "garantia" },
	{ "¿Venden tarjetas de regalo?", "Sí, de 10 a 200 EUR.", "regalo bono",
	  "regalo" },
	{ "¿Cómo cambio mi contraseña?", "Pulsa 'olvidé mi contraseña'.",
	  "clave cuenta", "contrasena" },
	{ "¿Tienen productos veganos?", "Sí, con la hoja verde.", "vegano",
	  "vegano" },
	{ "¿Qué tallas tienen?", "De XS a XXL.", "talla", "tallas" },
};

static const struct {
	const char *text, *intent;
} questions[] = {
	{ "wat r ur opening hours??", "hours" },
	{ "how much is shiping 📦", "shipping_cost" },
	{ "how long does delivry take", "delivery_time" },
	{ "do u ship internationaly to canada?", "international" },
	{ "track my ordr pls 🙏", "tracking" },
	{ "which payment methods do you acept", "payment" },
	{ "I want to retrun this product", "returns" },
	{ "where is the store located", "location" },
	{ "any discount code? 😍", "discount" },
	{ "can i cancel my order", "cancel" },
	{ "is there a waranty", "warranty" },
	{ "do you sell gift cards 🎁", "gift_cards" },
	{ "forgot password, how do i reset it", "password" },
	{ "vegan products?", "vegan" },
	{ "what sizes do you have", "sizes" },
	{ "cual es el horario de atencion", "horario" },
	{ "cuanto cuesta el envio 🚚", "costo_envio" },
	{ "cuánto tarda la entrega?", "tiempo_entrega" },
	{ "hacen envios internacionales", "internacional" },
	{ "como rastreo mi pedido", "seguimiento" },
	{ "que formas de pago aseptan", "formas_pago" },
	{ "como devuelvo un produto", "devoluciones" },
	{ "¿dónde está la tienda? 📍", "ubicacion" },
	{ "tienen cupones de descuento", "descuento" },
	{ "puedo cancelar mi pedio", "cancelar" },
	{ "tienen garantia", "garantia" },
	{ "venden tarjetas de regalo?", "regalo" },
	{ "como cambio mi contrasena", "contrasena" },
	{ "¿tienen productos beganos?", "vegano" },
	{ "qué tallas tienen 👕", "tallas" },
	{ "HOW MUCH DOES SHIPPING COST", "shipping_cost" },
	{ "Horario?", "horario" },
};

static void
test_quality(void **state)
{
	pgh pg;
	svch h;
	char tenant[37], user[37];
	pl_principal p, svc = svch_service();
	int rc = pgh_start(&pg), hits = 0;
	size_t nq = sizeof(questions) / sizeof(questions[0]);
	size_t nf = sizeof(faq) / sizeof(faq[0]);

	(void)state;
	if (rc == -1)
		skip();
	assert_int_equal(rc, 0);
	assert_int_equal(svch_start(&h, &pg, &agents_service_def, 2, NULL), 0);
	pl_uuid7_str(tenant);
	pl_uuid7_str(user);
	p = svch_user(tenant, user, PARLEY__RPC__V1__ROLE__ROLE_ADMIN);
	{
		Parley__Agents__V1__CreateAgentRequest ca =
		        PARLEY__AGENTS__V1__CREATE_AGENT_REQUEST__INIT;
		Parley__Agents__V1__CreateAgentResponse *car = NULL;
		Parley__Agents__V1__ImportKnowledgeRequest ik =
		        PARLEY__AGENTS__V1__IMPORT_KNOWLEDGE_REQUEST__INIT;
		Parley__Agents__V1__ImportKnowledgeResponse *ikr = NULL;
		Parley__Agents__V1__PublishAgentRequest pr =
		        PARLEY__AGENTS__V1__PUBLISH_AGENT_REQUEST__INIT;
		Parley__Agents__V1__PublishAgentResponse *prr = NULL;
		ag_entry e[64], *ep[64];
		char *kws[64][1];

		ca.name = "FAQ";
		assert_int_equal(
		        svch_call(
		                &h, M("CreateAgent"), &p, &ca.base,
		                &parley__agents__v1__create_agent_response__descriptor,
		                (void **)&car, NULL),
		        PL_OK);
		for (size_t i = 0; i < nf; i++) {
			parley__agents__v1__knowledge_entry__init(&e[i]);
			e[i].question = (char *)faq[i].q;
			e[i].answer = (char *)faq[i].a;
			e[i].intent = (char *)faq[i].intent;
			kws[i][0] = (char *)faq[i].kw;
			e[i].keywords = kws[i];
			e[i].n_keywords = 1;
			ep[i] = &e[i];
		}
		ik.agent_id = car->id;
		ik.entries = ep;
		ik.n_entries = nf;
		assert_int_equal(
		        svch_call(
		                &h, M("ImportKnowledge"), &p, &ik.base,
		                &parley__agents__v1__import_knowledge_response__descriptor,
		                (void **)&ikr, NULL),
		        PL_OK);
		pr.id = car->id;
		assert_int_equal(
		        svch_call(
		                &h, M("PublishAgent"), &p, &pr.base,
		                &parley__agents__v1__publish_agent_response__descriptor,
		                (void **)&prr, NULL),
		        PL_OK);
		for (size_t i = 0; i < nq; i++) {
			ag_reply_req r =
			        PARLEY__AGENTS__V1__REPLY_REQUEST__INIT;
			ag_reply_resp *o = NULL;
			char key[32];

			snprintf(key, sizeof(key), "q-%zu", i);
			r.tenant_id = tenant;
			r.agent_id = car->id;
			r.session_key = key;
			r.text = (char *)questions[i].text;
			assert_int_equal(
			        svch_call(
			                &h, M("Reply"), &svc, &r.base,
			                &parley__agents__v1__reply_response__descriptor,
			                (void **)&o, NULL),
			        PL_OK);
			if (strcmp(o->intent, questions[i].intent) == 0)
				hits++;
			else
				printf("miss: \"%s\" -> \"%s\" (%.2f), wanted "
				       "%s\n",
				       questions[i].text, o->intent,
				       o->confidence, questions[i].intent);
		}
	}
	printf("retrieval hit rate: %d/%zu = %.1f %%\n", hits, nq,
	       100.0 * hits / (double)nq);
	svch_stop(&h);
	pgh_stop(&pg);
	assert_true(hits * 100 >= 90 * (int)nq);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quality),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
