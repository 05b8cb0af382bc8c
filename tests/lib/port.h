// A TCP port on 127.0.0.1 for a server a test starts.
//
// bind(port 0) hands out a port from the kernel's ephemeral range, the same
// range outgoing connections take their local ports from: between the probe
// and the server's own bind, a client socket of a test running beside this
// one could take it ("Address already in use"). test_port picks below that
// range instead, where only another test's servers bind, at random, and
// checks that the port is free now and was not handed out lately in this
// process (a caller may take several before binding any).
#ifndef TEST_PORT_H
#define TEST_PORT_H

// A free port (1024..65535), or -1 when none was found.
int test_port(void);

#endif
