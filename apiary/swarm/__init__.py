"""The swarm engine: the LangGraph graph (decompose → sub-agents → synthesize), its
checkpointer, the sub-agent tool loop, and the tools sub-agents may call."""
