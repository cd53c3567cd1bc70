#include "runtime/grammar/stack_walk.h"

#include <algorithm>

namespace tokenmill::grammar {

void StackSet::Add(std::span<const int32_t> stack) {
  for (size_t i = 0; i < size(); ++i) {
    const std::span<const int32_t> have = this->stack(i);
    if (std::equal(have.begin(), have.end(), stack.begin(), stack.end())) return;
  }
  frames_.insert(frames_.end(), stack.begin(), stack.end());
  ends_.push_back(static_cast<uint32_t>(frames_.size()));
}

void StackStepper::Step(const StackSet& in, uint8_t byte, bool bottom_is_context, StackSet* out,
                        bool* undecided, bool ignore_bottom_return) {
  ignore_bottom_return_ = ignore_bottom_return;
  out->Clear();
  const int32_t cls = a_->byte_class[byte];
  for (size_t i = 0; i < in.size(); ++i) {
    const std::span<const int32_t> stack = in.stack(i);
    scratch_.assign(stack.begin(), stack.end());
    StepTop(cls, bottom_is_context, out, undecided);
  }
  // An ambiguous grammar (alternatives through calls that share prefixes)
  // could double the stacks with every byte; the first kMaxStacks carry on.
  // Every stack kept can still complete, so outputs stay valid; only for
  // such grammars can the mask and AcceptToken then disagree on a token.
  out->Truncate(kMaxStacks);
}

// Steps scratch_ (restored on return) by one byte of class cls.
void StackStepper::StepTop(int32_t cls, bool bottom_is_context, StackSet* out, bool* undecided) {
  const int32_t top = scratch_.back();
  const int32_t next = a_->next[static_cast<size_t>(top) * a_->num_classes + cls];
  if (next >= 0) {
    scratch_.back() = next;
    out->Add(scratch_);
    scratch_.back() = top;
  }
  for (uint32_t c = a_->call_begin[top]; c < a_->call_begin[top + 1]; ++c) {
    const DfaCall& call = a_->calls[c];
    if (static_cast<int32_t>(scratch_.size()) >= max_depth_) {
      if (bottom_is_context) *undecided = true;
      continue;
    }
    scratch_.back() = call.return_state;
    scratch_.push_back(a_->rule_start[call.rule]);
    StepTop(cls, bottom_is_context, out, undecided);
    scratch_.pop_back();
    scratch_.back() = top;
  }
  if (a_->accepting[top] && a_->rule_called[a_->state_rule[top]]) {
    if (scratch_.size() > 1) {
      scratch_.pop_back();
      StepTop(cls, bottom_is_context, out, undecided);
      scratch_.push_back(top);
    } else if (bottom_is_context && !ignore_bottom_return_) {
      *undecided = true;
    }
  }
}

void TokenWalker::StepLevel(const Level& from, uint8_t byte, bool bottom_is_context,
                            bool first_byte, Level* to) {
  to->undecided = from.undecided;
  if (from.single >= 0 && a_->simple[from.single]) {
    const int32_t next = a_->Next(from.single, byte);
    to->single = next;
    to->empty = next < 0;
    return;
  }
  const StackSet* in = &from.set;
  if (from.single >= 0) {
    single_scratch_.Clear();
    const int32_t frame = from.single;
    single_scratch_.Add({&frame, 1});
    in = &single_scratch_;
  }
  bool undecided = false;
  stepper_.Step(*in, byte, bottom_is_context, &to->set, &undecided,
                bottom_is_context && first_byte);
  to->undecided = to->undecided || undecided;
  to->single = to->set.SingleFrame();
  to->empty = to->set.empty();
}

}  // namespace tokenmill::grammar
