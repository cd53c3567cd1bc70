// JSON Schema (the draft 2020-12 subset structured outputs use) to a byte
// automaton that accepts exactly the JSON texts the engine may emit for it:
// a subset of the schema's valid instances, in compact form.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "runtime/grammar/automaton.h"

namespace tokenmill::grammar {

struct JsonSchemaOptions {
  // OpenAI's `strict`: keywords the compiler does not know (and `format`s it
  // has no pattern for) are kInvalidArgument instead of ignored. Either way,
  // known assertions the engine cannot enforce (oneOf, not, if/then/else,
  // multipleOf, minProperties, uniqueItems: true, prefixItems, ...) are
  // refused, since ignoring them could emit invalid output; annotations
  // (title, description, examples, default, $comment, ...) are ignored.
  bool strict = false;
  // true: one optional space may follow each ':' and ',' (as json.dumps
  // writes); false: fully compact. No other whitespace is ever emitted.
  bool space_after_separators = true;
  // Literal bytes before and after the value, e.g. a tool-call wrapper
  // ("<tool_call>\n" ... "\n</tool_call>") when a call is forced.
  std::string prefix;
  std::string suffix;
  GrammarLimits limits;
};

// What the compiler emits, for each schema keyword:
//  - objects: the listed `properties` in schema order, optional ones may be
//    skipped, no others (an object schema with no `properties` takes any
//    members, of the `additionalProperties` schema when it is one);
//  - arrays: `items` (any value when absent) between minItems and maxItems;
//  - strings: unescaped characters plus the escapes \" \\ \/ \b \f \n \r \t
//    and \uXXXX (no surrogates), counted as code points for min/maxLength;
//    with `pattern` or `format`, unescaped characters only, and then
//    min/maxLength are refused;
//  - integers and numbers: plain decimals (no exponent, at most 15 integer
//    and 15 fraction digits), within minimum / maximum / exclusive bounds;
//    a number's fraction appears only where every fraction stays in range;
//  - enum / const: each value as compact JSON; anyOf: any alternative;
//    $ref: "#", "#/$defs/..." or any local JSON pointer, recursion allowed.
// Formats: date-time, date, time, email, uuid, ipv4, uri.
// Errors are kInvalidArgument naming the JSON pointer of the offending
// keyword.
absl::StatusOr<ByteAutomaton> CompileJsonSchema(std::string_view schema_json,
                                                const JsonSchemaOptions& options);

// `response_format: json_object`: any JSON object.
absl::StatusOr<ByteAutomaton> CompileAnyJsonObject(const JsonSchemaOptions& options);

}  // namespace tokenmill::grammar
