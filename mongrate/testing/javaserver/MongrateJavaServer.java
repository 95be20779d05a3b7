import java.util.List;
import java.util.concurrent.CountDownLatch;

import de.bwaldvogel.mongo.MongoDatabase;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.CollectionOptions;
import de.bwaldvogel.mongo.backend.CursorRegistry;
import de.bwaldvogel.mongo.backend.Index;
import de.bwaldvogel.mongo.backend.QueryResult;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import de.bwaldvogel.mongo.backend.memory.MemoryCollection;
import de.bwaldvogel.mongo.backend.memory.MemoryDatabase;
import de.bwaldvogel.mongo.bson.Document;

/**
 * mongo-java-server (memory backend) on 127.0.0.1 for mongrate's tests.
 *
 * <p>Usage: {@code java -jar mongrate-javaserver.jar PORT [WIRE_VERSION]}. The server answers
 * {@code isMaster} (not {@code hello}), so the declared wire version must stay below 13,
 * where drivers switch to {@code hello}; the caller picks one its driver accepts. Prints
 * one line "listening 127.0.0.1:PORT" once bound and runs until SIGTERM.
 */
public final class MongrateJavaServer {

    private MongrateJavaServer() {
    }

    /** The version buildInfo reports (mongo-java-server's own claim) with a chosen wire version. */
    private record Declared(int wireVersion) implements MongoVersion {
        @Override
        public List<Integer> getVersionArray() {
            return List.of(5, 0, 0);
        }

        @Override
        public int getWireVersion() {
            return wireVersion;
        }
    }

    /**
     * The memory backend, except that a query naming one {@code _id} beside other fields is
     * answered through the {@code _id} index, as MongoDB's planner does: mongo-java-server
     * uses an index only for a query of exactly its keys, so a write conditional on what was
     * read ({@code {_id: X, field: value}}) would scan the whole collection.
     */
    static final class Backend extends MemoryBackend {
        @Override
        public MemoryDatabase openOrCreateDatabase(String databaseName) {
            return new Database(databaseName, getCursorRegistry());
        }
    }

    static final class Database extends MemoryDatabase {
        Database(String databaseName, CursorRegistry cursorRegistry) {
            super(databaseName, cursorRegistry);
        }

        @Override
        protected MemoryCollection openOrCreateCollection(String name, CollectionOptions options) {
            return new Collection(this, name, options, cursorRegistry);
        }
    }

    static final class Collection extends MemoryCollection {
        Collection(MongoDatabase database, String name, CollectionOptions options,
                   CursorRegistry cursorRegistry) {
            super(database, name, options, cursorRegistry);
        }

        @Override
        protected QueryResult queryDocuments(Document query, Document orderBy, int skip, int limit,
                                             int batchSize, Document fieldSelector) {
            Object id = query.get("_id");
            if (query.size() > 1 && id != null && !isOperator(id)) {
                Document byId = new Document("_id", id);
                for (Index<Integer> index : getIndexes()) {
                    if (index.canHandle(byId)) {
                        return matchDocuments(query, index.getPositions(byId), orderBy, skip,
                                limit, batchSize, fieldSelector);
                    }
                }
            }
            return super.queryDocuments(query, orderBy, skip, limit, batchSize, fieldSelector);
        }

        private static boolean isOperator(Object value) {
            return value instanceof Document doc
                    && doc.keySet().stream().anyMatch(k -> k.startsWith("$"));
        }
    }

    public static void main(String[] args) throws InterruptedException {
        if (args.length < 1 || args.length > 2) {
            System.err.println("usage: java -jar mongrate-javaserver.jar PORT [WIRE_VERSION]");
            System.exit(2);
        }
        int port = Integer.parseInt(args[0]);
        MemoryBackend backend = new Backend();
        if (args.length == 2) {
            int wire = Integer.parseInt(args[1]);
            if (wire < 0 || wire >= 13) {
                System.err.println("wire version " + wire + " unsupported: this server answers "
                        + "isMaster only, and drivers send hello from wire version 13 on");
                System.exit(2);
            }
            backend.version(new Declared(wire));
        }
        MongoServer server = new MongoServer(backend);
        server.bind("127.0.0.1", port);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.shutdownNow();
            stopped.countDown();
        }));
        System.out.println("listening " + server.getLocalAddress().getHostString() + ":"
                + server.getLocalAddress().getPort());
        System.out.flush();
        stopped.await();
    }
}
