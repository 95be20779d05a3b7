import java.util.List;
import java.util.concurrent.CountDownLatch;

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

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

    public static void main(String[] args) throws InterruptedException {
        if (args.length < 1 || args.length > 2) {
            System.err.println("usage: java -jar mongrate-javaserver.jar PORT [WIRE_VERSION]");
            System.exit(2);
        }
        int port = Integer.parseInt(args[0]);
        MemoryBackend backend = new MemoryBackend();
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
