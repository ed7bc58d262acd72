/* fuzz_jsonrpc_request.c - libFuzzer target for jsonrpc_parse_request (make fuzz).
 * fuzz-sources: src/common/jsonrpc.c src/common/util.c src/common/log.c src/common/metrics.c
 *
 * The input is a POST body.  Checks, besides memory safety: a valid request
 * has the documented shape, an error has one of the three request codes, an
 * echoed id is a string or an integer, and a valid request printed back as
 * JSON is valid again (what the server accepts it can also say). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "jsonrpc.h"

#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *o, *id, *v, *o2, *id2;
	const char *why, *s;
	int code, code2;

	why = jsonrpc_parse_request((const char *)data, size, &o, &id, &code);
	check(id == NULL || json_object_is_type(id, json_type_string) ||
	    json_object_is_type(id, json_type_int));
	if (why != NULL) {
		check(*why != '\0');
		check(code == JSONRPC_PARSE_ERROR || code == JSONRPC_INVALID_REQUEST ||
		    code == JSONRPC_INVALID_PARAMS);
		check(code != JSONRPC_PARSE_ERROR || (o == NULL && id == NULL));
		json_object_put(o);
		return 0;
	}
	check(json_object_is_type(o, json_type_object));
	check(json_object_object_get_ex(o, "method", &v) &&
	    json_object_is_type(v, json_type_string));
	s = json_object_get_string(v);
	check(strlen(s) >= 1 && strlen(s) <= 200);
	check(!json_object_object_get_ex(o, "params", &v) || v == NULL ||
	    json_object_is_type(v, json_type_object));
	check(id == NULL || !json_object_is_type(id, json_type_string) ||
	    json_object_get_string_len(id) <= 1024);
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	why = jsonrpc_parse_request(s, strlen(s), &o2, &id2, &code2);
	check(why == NULL);
	check((id == NULL) == (id2 == NULL));
	json_object_put(o2);
	json_object_put(o);
	return 0;
}
