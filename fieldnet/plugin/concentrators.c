/*
 * lamplighter's Mosquitto plugin: a concentrator may speak for the lamps behind it.
 *
 * A cabinet's concentrator logs in as `{district}/cabinet/{cabinet}` and relays its lamps' commands and
 * acknowledgements on the lamps' own topics (`sl/{district}/lamp/{lamp}/cmd`, `.../ack`, `.../state`). Mosquitto's
 * ACL file can grant that only with one `topic` line per lamp under a `user` section, and its parser looks each
 * line's user up by walking every user before it: at a million lamps (6,000 concentrators) loading the file took
 * 45-50 s, during which the broker answered nobody. This plugin keeps the same rights in a hash table read from
 * a file of `{lamp stem} {concentrator username}` lines (written by `lamplighter devices provision`), reloaded
 * on SIGHUP with the password file and ACL.
 *
 * It answers only "yes, this concentrator may": read a lamp's `cmd`, write its `state` and `ack`. Everything
 * else it leaves (MOSQ_ERR_PLUGIN_DEFER) to the ACL file, so the file's rules stay the whole policy for every
 * other account and topic. Plugin interface version 5 (Mosquitto 2.0).
 *
 * Options: `plugin_opt_concentrators /path/to/concentrators` (required).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

struct table {
	char *text;      /* the file's bytes; keys and owners point into it */
	const char **keys;
	const char **owners;
	size_t *lens;
	size_t mask;     /* capacity - 1, capacity a power of two */
	size_t count;
};

static mosquitto_plugin_id_t *plugin_id = NULL;
static char *map_path = NULL;
static struct table *current = NULL;

static uint64_t fnv1a(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ULL;
	for(size_t i = 0; i < len; i++){
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static void table_free(struct table *t)
{
	if(!t) return;
	free(t->text);
	free(t->keys);
	free(t->owners);
	free(t->lens);
	free(t);
}

static void table_put(struct table *t, const char *key, size_t len, const char *owner)
{
	size_t i = (size_t)fnv1a(key, len) & t->mask;
	while(t->keys[i]){
		if(t->lens[i] == len && !memcmp(t->keys[i], key, len)){
			t->owners[i] = owner;
			return;
		}
		i = (i + 1) & t->mask;
	}
	t->keys[i] = key;
	t->lens[i] = len;
	t->owners[i] = owner;
	t->count++;
}

static const char *table_get(const struct table *t, const char *key, size_t len)
{
	size_t i = (size_t)fnv1a(key, len) & t->mask;
	while(t->keys[i]){
		if(t->lens[i] == len && !memcmp(t->keys[i], key, len)){
			return t->owners[i];
		}
		i = (i + 1) & t->mask;
	}
	return NULL;
}

/* Read the whole file; NULL (and a log line) when it cannot be read. Lines: `{stem} {owner}`; `#` comments. */
static struct table *table_load(const char *path)
{
	FILE *f = fopen(path, "rb");
	if(!f){
		mosquitto_log_printf(MOSQ_LOG_ERR, "lamplighter concentrators: cannot open %s", path);
		return NULL;
	}
	struct table *t = calloc(1, sizeof(*t));
	long size = -1;
	if(t && !fseek(f, 0, SEEK_END)) size = ftell(f);
	if(!t || size < 0 || fseek(f, 0, SEEK_SET) || !(t->text = malloc((size_t)size + 1))
			|| fread(t->text, 1, (size_t)size, f) != (size_t)size){
		mosquitto_log_printf(MOSQ_LOG_ERR, "lamplighter concentrators: cannot read %s", path);
		fclose(f);
		table_free(t);
		return NULL;
	}
	fclose(f);
	t->text[size] = '\0';

	size_t lines = 1;
	for(long i = 0; i < size; i++) if(t->text[i] == '\n') lines++;
	size_t cap = 16;
	while(cap < 2 * lines) cap <<= 1;
	t->mask = cap - 1;
	t->keys = calloc(cap, sizeof(*t->keys));
	t->owners = calloc(cap, sizeof(*t->owners));
	t->lens = calloc(cap, sizeof(*t->lens));
	if(!t->keys || !t->owners || !t->lens){
		mosquitto_log_printf(MOSQ_LOG_ERR, "lamplighter concentrators: out of memory for %zu lines", lines);
		table_free(t);
		return NULL;
	}
	char *line = t->text;
	while(line && *line){
		char *end = strchr(line, '\n');
		if(end) *end = '\0';
		if(*line != '#'){
			char *space = strchr(line, ' ');
			if(space && space > line && space[1]){
				*space = '\0';
				table_put(t, line, (size_t)(space - line), space + 1);
			}
		}
		line = end ? end + 1 : NULL;
	}
	return t;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	(void)event;
	(void)userdata;

	const char *user = mosquitto_client_username(ed->client);
	const char *topic = ed->topic;
	if(!current || !user || !topic || strncmp(topic, "sl/", 3)) return MOSQ_ERR_PLUGIN_DEFER;
	const char *stem = topic + 3;
	const char *leaf = strrchr(stem, '/');
	if(!leaf) return MOSQ_ERR_PLUGIN_DEFER;
	int allowed;
	if(!strcmp(leaf, "/cmd")){
		allowed = MOSQ_ACL_READ | MOSQ_ACL_SUBSCRIBE;
	}else if(!strcmp(leaf, "/state") || !strcmp(leaf, "/ack")){
		allowed = MOSQ_ACL_WRITE;
	}else{
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	if(!(ed->access & allowed)) return MOSQ_ERR_PLUGIN_DEFER;
	const char *owner = table_get(current, stem, (size_t)(leaf - stem));
	if(owner && !strcmp(owner, user)) return MOSQ_ERR_SUCCESS;
	return MOSQ_ERR_PLUGIN_DEFER;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	(void)userdata;
	struct table *fresh = table_load(map_path);
	if(fresh){
		table_free(current);
		current = fresh;
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "lamplighter concentrators: %zu lamps reloaded", fresh->count);
	}else{
		mosquitto_log_printf(MOSQ_LOG_WARNING, "lamplighter concentrators: reload failed, the old table stays");
	}
	return MOSQ_ERR_PLUGIN_DEFER; /* let every other plugin reload too */
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
		int option_count)
{
	(void)userdata;
	for(int i = 0; i < option_count; i++){
		if(!strcmp(options[i].key, "concentrators")){
			free(map_path);
			map_path = strdup(options[i].value);
		}
	}
	if(!map_path){
		mosquitto_log_printf(MOSQ_LOG_ERR, "lamplighter concentrators: plugin_opt_concentrators is not set");
		return MOSQ_ERR_INVAL;
	}
	current = table_load(map_path);
	if(!current) return MOSQ_ERR_INVAL;
	plugin_id = identifier;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "lamplighter concentrators: %zu lamps from %s", current->count, map_path);
	if(mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL, NULL)){
		return MOSQ_ERR_INVAL;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	if(plugin_id){
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL);
	}
	table_free(current);
	current = NULL;
	free(map_path);
	map_path = NULL;
	return MOSQ_ERR_SUCCESS;
}
