/* fuzz_jsonrpc_response.c - libFuzzer target for jsonrpc_parse_response (make fuzz).
 * fuzz-sources: src/common/jsonrpc.c src/common/util.c src/common/log.c src/common/metrics.c
 *
 * The input is a reply body to request id 1.  Checks, besides memory
 * safety: the four outcomes and what each promises (a result carries our id,
 * an error object an integer code) and that nothing is set otherwise. */
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
	struct json_object *o, *e, *v;
	const char *s;
	int rv;

	rv = jsonrpc_parse_response((const char *)data, size, 1, &o, &e);
	switch (rv) {
	case 0:
		check(e == NULL && json_object_is_type(o, json_type_object));
		check(json_object_object_get_ex(o, "result", &v));
		check(json_object_object_get_ex(o, "id", &v) &&
		    json_object_is_type(v, json_type_int) && json_object_get_int64(v) == 1);
		/* printed back, the same verdict */
		s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
		check(jsonrpc_parse_response(s, strlen(s), 1, &v, &e) == 0);
		json_object_put(v);
		break;
	case 1:
		check(o == NULL && json_object_is_type(e, json_type_object));
		check(json_object_object_get_ex(e, "code", &v) &&
		    json_object_is_type(v, json_type_int));
		break;
	case -1:
	case -2:
		check(o == NULL && e == NULL);
		break;
	default:
		check(0);
	}
	json_object_put(o);
	json_object_put(e);
	return 0;
}
