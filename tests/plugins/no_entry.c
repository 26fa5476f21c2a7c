/* no_entry.c - a shared object without postern_plugin_entry(). */
int not_a_plugin(void);
int not_a_plugin(void) { return 42; }
