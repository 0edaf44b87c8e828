package wpcdc.bench;

import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.format.Json;
import java.io.ObjectOutputStream;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.connect.json.JsonConverter;

/**
 * Debezium's embedded engine (MySQL connector, Json format, no Kafka) streaming one binlog range of
 * the bench's database: counts the change records handed to the consumer and prints one line
 * {@code debezium result: {...}} the moment the expected count is reached (bench/bench.py times
 * the process around it). No snapshot: the offset file is written before the engine starts, at
 * the range's first position, and {@code snapshot.mode=recovery} only rebuilds the schema history
 * from the tables' current definitions (the range holds no DDL) before streaming from there.
 *
 * <p>Arguments: {@code key=value} pairs: host, port, user, database, tables (comma separated,
 * without the database), file and pos (where the range starts, a transaction boundary), gtids (the
 * server's GTID state there: Debezium resumes by it when the server has GTIDs), rows (the expected
 * count: the run ends when it is reached), server_id, dir (a fresh directory for the offset and the
 * schema history), idle_seconds (fail when no record arrives for that long), connector (the
 * connector class; MySqlConnector by default). The password is WPCDC_MYSQL_PASSWORD's.
 */
public final class DebeziumBench {
    private static final String ENGINE = "wpcdc-bench";
    private static final String PREFIX = "bench";

    private DebeziumBench() {}

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (String arg : argv) {
            int eq = arg.indexOf('=');
            if (eq < 0) {
                fail("argument without '=': " + arg);
            }
            a.put(arg.substring(0, eq), arg.substring(eq + 1));
        }
        long expected = Long.parseLong(need(a, "rows"));
        long idleNanos = TimeUnit.SECONDS.toNanos(Long.parseLong(a.getOrDefault("idle_seconds", "60")));
        Path dir = Path.of(need(a, "dir"));
        Files.createDirectories(dir);
        Path offsets = dir.resolve("offsets.dat");
        String db = need(a, "database");
        writeOffset(offsets, need(a, "file"), Long.parseLong(need(a, "pos")), a.getOrDefault("gtids", ""));

        StringBuilder tables = new StringBuilder();
        for (String t : need(a, "tables").split(",")) {
            tables.append(tables.length() > 0 ? "," : "").append(db).append('.').append(t.trim());
        }
        Properties p = new Properties();
        p.setProperty("name", ENGINE);
        String connector = a.getOrDefault("connector", "io.debezium.connector.mysql.MySqlConnector");
        p.setProperty("connector.class", connector);
        p.setProperty("offset.storage", "org.apache.kafka.connect.storage.FileOffsetBackingStore");
        p.setProperty("offset.storage.file.filename", offsets.toString());
        p.setProperty("offset.flush.interval.ms", "10000");
        p.setProperty("schema.history.internal", "io.debezium.storage.file.history.FileSchemaHistory");
        p.setProperty("schema.history.internal.file.filename", dir.resolve("history.dat").toString());
        p.setProperty("database.hostname", need(a, "host"));
        p.setProperty("database.port", need(a, "port"));
        p.setProperty("database.user", need(a, "user"));
        // From the environment (as wpcdc takes it), not the command line other users can read.
        p.setProperty("database.password", System.getenv().getOrDefault("WPCDC_MYSQL_PASSWORD", ""));
        // TLS as the bench's wpcdc has it: with mysql.tls false PyMySQL still encrypts whenever the server
        // offers TLS (MySQL 9.7 does, with its generated certificate; Debian's MariaDB offers none), which is
        // Debezium's MySQL default `preferred` too. `disabled` here made Debezium read MySQL's binlog in
        // plaintext while wpcdc decrypted every byte of it.
        p.setProperty("database.ssl.mode", connector.contains("mariadb") ? "disable" : "preferred");
        p.setProperty("database.server.id", a.getOrDefault("server_id", "5401"));
        p.setProperty("database.include.list", db);
        p.setProperty("table.include.list", tables.toString());
        p.setProperty("topic.prefix", PREFIX);
        // Streaming only: an offset exists (written above), the history does not; `recovery` reads the
        // captured tables' definitions (no rows) and streams from the offset.
        p.setProperty("snapshot.mode", "recovery");
        p.setProperty("snapshot.locking.mode", "none");
        p.setProperty("include.schema.changes", "false");
        // One record per row change, like wpcdc's one event per row (a delete's tombstone is Kafka
        // compaction plumbing, not a change).
        p.setProperty("tombstones.on.delete", "false");
        // The JSON a Kafka sink would carry, without the schema repeated in every record (the cheaper
        // of the two: Debezium is not handicapped).
        p.setProperty("converter.schemas.enable", "false");

        long mainStart = System.nanoTime();
        com.sun.management.OperatingSystemMXBean os =
                (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        long[] cpu = {0, 0}; // the process's CPU nanoseconds at the first record and at the last
        long[] first = {0};
        long[] last = {0};
        long[] count = {0};
        Map<String, Long> byTable = new TreeMap<>();
        CountDownLatch done = new CountDownLatch(1);
        AtomicReference<String> failure = new AtomicReference<>();

        DebeziumEngine<ChangeEvent<String, String>> engine = DebeziumEngine.create(Json.class)
                .using(p)
                .using((success, message, error) -> {
                    if (!success || count[0] < expected) {
                        failure.compareAndSet(null, "engine stopped after " + count[0] + " of " + expected
                                + " rows: " + message + (error != null ? " (root cause: " + rootCause(error) + ")" : ""));
                    }
                    done.countDown();
                })
                .notifying((List<ChangeEvent<String, String>> records,
                        DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer) -> {
                    for (ChangeEvent<String, String> r : records) {
                        if (r.value() != null) {
                            synchronized (count) {
                                if (count[0] == 0) {
                                    first[0] = System.nanoTime();
                                    cpu[0] = os.getProcessCpuTime();
                                }
                                count[0]++;
                                last[0] = System.nanoTime();
                                byTable.merge(r.destination(), 1L, Long::sum);
                                if (count[0] == expected) {
                                    cpu[1] = os.getProcessCpuTime();
                                    done.countDown();
                                }
                            }
                        }
                        committer.markProcessed(r);
                    }
                    committer.markBatchFinished();
                })
                .build();
        ExecutorService executor = Executors.newSingleThreadExecutor();
        executor.execute(engine);

        long lastSeen = -1;
        long lastProgress = System.nanoTime();
        while (!done.await(200, TimeUnit.MILLISECONDS)) {
            long n;
            synchronized (count) {
                n = count[0];
            }
            if (n != lastSeen) {
                lastSeen = n;
                lastProgress = System.nanoTime();
            } else if (System.nanoTime() - lastProgress > idleNanos) {
                failure.compareAndSet(null, "no change record for " + TimeUnit.NANOSECONDS.toSeconds(idleNanos)
                        + " s after " + n + " of " + expected + " rows");
                break;
            }
        }
        long jvmStartMillis = ManagementFactory.getRuntimeMXBean().getStartTime();
        String result;
        synchronized (count) {
            StringBuilder tablesJson = new StringBuilder("{");
            for (Map.Entry<String, Long> e : byTable.entrySet()) {
                tablesJson.append(tablesJson.length() > 1 ? "," : "")
                        .append('"').append(e.getKey()).append("\":").append(e.getValue());
            }
            tablesJson.append('}');
            double firstToLast = count[0] > 0 ? (last[0] - first[0]) / 1e9 : 0.0;
            double mainToLast = count[0] > 0 ? (last[0] - mainStart) / 1e9 : 0.0;
            // The JVM's own start (ms resolution) to the last row: the JVM's start-up included.
            double jvmToLast = count[0] > 0
                    ? (System.currentTimeMillis() - (System.nanoTime() - last[0]) / 1_000_000 - jvmStartMillis) / 1e3
                    : 0.0;
            result = String.format(java.util.Locale.ROOT,
                    "{\"rows\":%d,\"expected\":%d,\"first_to_last_s\":%.6f,\"main_to_last_s\":%.6f,"
                            + "\"jvm_start_to_last_s\":%.3f,\"cpu_first_s\":%.3f,\"cpu_last_s\":%.3f,"
                            + "\"by_table\":%s,\"error\":%s}",
                    count[0], expected, firstToLast, mainToLast, jvmToLast, cpu[0] / 1e9, cpu[1] / 1e9, tablesJson,
                    failure.get() == null ? "null" : quote(failure.get()));
        }
        System.out.println("debezium result: " + result);
        System.out.flush();
        try {
            engine.close();
        } catch (IllegalStateException alreadyStopped) {
            // It stops itself when it fails; the failure is in the result line.
        }
        executor.shutdown();
        executor.awaitTermination(30, TimeUnit.SECONDS);
        // Debezium's and Kafka Connect's non-daemon threads would otherwise keep a finished JVM alive.
        System.exit(failure.get() == null ? 0 : 2);
    }

    /** The offset the engine would have committed at `file:pos`, in FileOffsetBackingStore's format
     * (a serialised HashMap of byte arrays), keyed the way the engine's offset reader looks it up:
     * [engine name, source partition] through a schemaless JsonConverter. */
    private static void writeOffset(Path path, String file, long pos, String gtids) throws Exception {
        JsonConverter converter = new JsonConverter();
        converter.configure(Map.of("schemas.enable", "false"), true);
        byte[] key = converter.fromConnectData(ENGINE, null, Arrays.asList(ENGINE, Map.of("server", PREFIX)));
        converter.configure(Map.of("schemas.enable", "false"), false);
        Map<String, Object> offset = new HashMap<>();
        offset.put("file", file);
        offset.put("pos", pos);
        if (!gtids.isEmpty()) {
            // With gtid_mode=ON the connector resumes by GTID set, not by file:pos.
            offset.put("gtids", gtids);
        }
        byte[] value = converter.fromConnectData(ENGINE, null, offset);
        HashMap<byte[], byte[]> raw = new HashMap<>();
        raw.put(key, value);
        try (ObjectOutputStream out = new ObjectOutputStream(Files.newOutputStream(path))) {
            out.writeObject(raw);
        }
    }

    private static String rootCause(Throwable error) {
        Throwable t = error;
        while (t.getCause() != null && t.getCause() != t) {
            t = t.getCause();
        }
        return t.toString();
    }

    private static String need(Map<String, String> a, String key) {
        String v = a.get(key);
        if (v == null) {
            fail("missing argument " + key + "=...");
        }
        return v;
    }

    private static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n") + "\"";
    }

    private static void fail(String message) {
        System.err.println("debezium bench: " + message);
        System.exit(64);
    }
}
