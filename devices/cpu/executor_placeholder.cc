// placeholder: replaced by the executor
