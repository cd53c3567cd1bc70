#include "runtime/chat/chat_template.h"

#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tokenmill::chat {
namespace {

enum class Role { kSystem, kUser, kAssistant };

// How a rendered piece is encoded. Control pieces are exactly one control
// token's text; markup and content pieces are plain text.
enum class PieceKind { kControl, kMarkup, kContent };

struct Piece {
  std::string text;
  PieceKind kind = PieceKind::kMarkup;
};

class PieceList {
 public:
  void Control(std::string_view text) { Add(text, PieceKind::kControl); }
  void Markup(std::string_view text) { Add(text, PieceKind::kMarkup); }
  void Content(std::string_view text) { Add(text, PieceKind::kContent); }
  std::vector<Piece> Take() { return std::move(pieces_); }

 private:
  void Add(std::string_view text, PieceKind kind) {
    if (text.empty()) return;
    pieces_.push_back(Piece{std::string(text), kind});
  }
  std::vector<Piece> pieces_;
};

absl::StatusOr<Role> ParseRole(const std::string& role) {
  if (role == "system" || role == "developer") return Role::kSystem;
  if (role == "user") return Role::kUser;
  if (role == "assistant") return Role::kAssistant;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown chat role '", role, "' (expected system, developer, user or assistant)"));
}

const char* RoleName(Role role) {
  switch (role) {
    case Role::kSystem:
      return "system";
    case Role::kUser:
      return "user";
    case Role::kAssistant:
      return "assistant";
  }
  return "user";
}

// Llama 3 and Llama 2 templates trim each message's content; ChatML's do not.
std::string_view Trimmed(std::string_view text) {
  const size_t begin = text.find_first_not_of(" \t\n\r\f\v");
  if (begin == std::string_view::npos) return {};
  const size_t end = text.find_last_not_of(" \t\n\r\f\v");
  return text.substr(begin, end - begin + 1);
}

void RenderLlama3(std::span<const ChatMessage> messages, std::span<const Role> roles,
                  PieceList* out) {
  out->Control("<|begin_of_text|>");
  for (size_t i = 0; i < messages.size(); ++i) {
    out->Control("<|start_header_id|>");
    out->Markup(RoleName(roles[i]));
    out->Control("<|end_header_id|>");
    out->Markup("\n\n");
    out->Content(Trimmed(messages[i].content));
    out->Control("<|eot_id|>");
  }
  out->Control("<|start_header_id|>");
  out->Markup("assistant");
  out->Control("<|end_header_id|>");
  out->Markup("\n\n");
}

void RenderChatMl(std::span<const ChatMessage> messages, std::span<const Role> roles,
                  PieceList* out) {
  for (size_t i = 0; i < messages.size(); ++i) {
    out->Control("<|im_start|>");
    out->Markup(absl::StrCat(RoleName(roles[i]), "\n"));
    out->Content(messages[i].content);
    out->Control("<|im_end|>");
    out->Markup("\n");
  }
  out->Control("<|im_start|>");
  out->Markup("assistant\n");
}

// Llama 2 has no system turn: system text goes into the next user turn inside
// <<SYS>> markers. Each user turn opens "<s>[INST] ", each assistant turn
// closes with " </s>". An assistant turn without a user turn before it gets
// an empty [INST] block so that the structure stays what the model knows.
void RenderLlama2(std::span<const ChatMessage> messages, std::span<const Role> roles,
                  PieceList* out) {
  std::optional<std::string> pending_system;
  bool awaiting_reply = false;  // an [INST] block is open for an assistant turn
  auto open_user_turn = [&](std::string_view user_text) {
    out->Control("<s>");
    out->Markup("[INST] ");
    if (pending_system) {
      out->Markup("<<SYS>>\n");
      out->Content(*pending_system);
      out->Markup("\n<</SYS>>\n\n");
      pending_system.reset();
    }
    out->Content(user_text);
    out->Markup(" [/INST]");
    awaiting_reply = true;
  };
  for (size_t i = 0; i < messages.size(); ++i) {
    std::string_view text = Trimmed(messages[i].content);
    switch (roles[i]) {
      case Role::kSystem:
        if (pending_system) {
          absl::StrAppend(&*pending_system, "\n\n", std::string(text));
        } else {
          pending_system = std::string(text);
        }
        break;
      case Role::kUser:
        open_user_turn(text);
        break;
      case Role::kAssistant:
        if (!awaiting_reply) open_user_turn("");
        out->Markup(" ");
        out->Content(text);
        out->Markup(" ");
        out->Control("</s>");
        awaiting_reply = false;
        break;
    }
  }
  // A trailing system message still needs its [INST] block for the reply; a
  // trailing assistant turn ends the text with its </s>.
  if (pending_system) open_user_turn("");
}

void RenderPlain(std::span<const ChatMessage> messages, std::span<const Role> roles,
                 PieceList* out) {
  for (size_t i = 0; i < messages.size(); ++i) {
    out->Markup(absl::StrCat(RoleName(roles[i]), ": "));
    out->Content(messages[i].content);
    out->Markup("\n");
  }
  out->Markup("assistant:");
}

absl::StatusOr<std::vector<Piece>> RenderPieces(ChatFormat format,
                                                std::span<const ChatMessage> messages) {
  if (messages.empty()) return absl::InvalidArgumentError("a chat needs at least one message");
  std::vector<Role> roles;
  roles.reserve(messages.size());
  for (const ChatMessage& message : messages) {
    absl::StatusOr<Role> role = ParseRole(message.role);
    if (!role.ok()) return role.status();
    roles.push_back(*role);
  }
  PieceList pieces;
  switch (format) {
    case ChatFormat::kLlama3:
      RenderLlama3(messages, roles, &pieces);
      break;
    case ChatFormat::kChatMl:
      RenderChatMl(messages, roles, &pieces);
      break;
    case ChatFormat::kLlama2:
      RenderLlama2(messages, roles, &pieces);
      break;
    case ChatFormat::kPlain:
      RenderPlain(messages, roles, &pieces);
      break;
  }
  return pieces.Take();
}

// Whether the format's text starts with the BOS token itself.
bool IncludesBos(ChatFormat format) {
  return format == ChatFormat::kLlama3 || format == ChatFormat::kLlama2;
}

}  // namespace

ChatTemplate ChatTemplate::FromJinja(std::string_view jinja) {
  auto has = [&](std::string_view marker) { return jinja.find(marker) != std::string_view::npos; };
  if (has("<|start_header_id|>") && has("<|eot_id|>")) return ChatTemplate(ChatFormat::kLlama3);
  if (has("<|im_start|>")) return ChatTemplate(ChatFormat::kChatMl);
  if (has("[INST]")) return ChatTemplate(ChatFormat::kLlama2);
  return ChatTemplate(ChatFormat::kPlain);
}

absl::StatusOr<std::vector<ChatSegment>> ChatTemplate::RenderSegments(
    std::span<const ChatMessage> messages) const {
  absl::StatusOr<std::vector<Piece>> pieces = RenderPieces(format_, messages);
  if (!pieces.ok()) return pieces.status();
  std::vector<ChatSegment> segments;
  for (Piece& piece : *pieces) {
    const bool markup = piece.kind != PieceKind::kContent;
    if (!segments.empty() && segments.back().markup && markup) {
      segments.back().text += piece.text;
    } else {
      segments.push_back(ChatSegment{std::move(piece.text), markup});
    }
  }
  return segments;
}

absl::StatusOr<std::string> ChatTemplate::Render(std::span<const ChatMessage> messages) const {
  absl::StatusOr<std::vector<Piece>> pieces = RenderPieces(format_, messages);
  if (!pieces.ok()) return pieces.status();
  std::string text;
  for (const Piece& piece : *pieces) text += piece.text;
  return text;
}

// The whole prompt is encoded the way the tokenizer encodes a string with
// control tokens parsed (text between control tokens as one run, so BPE
// merges across the markup/content seams are the ones the model saw in
// training), except that only the template's own control tokens become
// control ids: runs are encoded with parse_special = false, so control-token
// text inside a message stays text.
absl::StatusOr<std::vector<int32_t>> ChatTemplate::Encode(
    std::span<const ChatMessage> messages, const tokenizer::Tokenizer& tokenizer) const {
  absl::StatusOr<std::vector<Piece>> pieces = RenderPieces(format_, messages);
  if (!pieces.ok()) return pieces.status();

  const tokenizer::Tokenizer::EncodeOptions plain{
      .add_bos = false, .add_eos = false, .parse_special = false};
  std::vector<int32_t> ids;
  if (!IncludesBos(format_)) {
    // An empty text gives exactly the BOS the spec asks for (or nothing).
    ids = tokenizer.Encode("", {.add_bos = true, .add_eos = false, .parse_special = false});
  }
  std::string run;
  auto flush = [&] {
    if (run.empty()) return;
    std::vector<int32_t> run_ids = tokenizer.Encode(run, plain);
    ids.insert(ids.end(), run_ids.begin(), run_ids.end());
    run.clear();
  };
  for (const Piece& piece : *pieces) {
    if (piece.kind == PieceKind::kControl) {
      std::optional<int32_t> id = tokenizer.TokenId(piece.text);
      if (id && tokenizer.token_type(*id) == tokenizer::TokenType::kControl) {
        flush();
        ids.push_back(*id);
        continue;
      }
      // A vocabulary without this control token: the markup stays text.
    }
    run += piece.text;
  }
  flush();
  return ids;
}

std::string_view ChatTemplate::name() const {
  switch (format_) {
    case ChatFormat::kPlain:
      return "plain";
    case ChatFormat::kLlama3:
      return "llama3";
    case ChatFormat::kChatMl:
      return "chatml";
    case ChatFormat::kLlama2:
      return "llama2";
  }
  return "plain";
}

}  // namespace tokenmill::chat
