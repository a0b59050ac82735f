"""A third-party OPC UA server for the interop run: FreeOpcUa's asyncua (Python).

Usage: asyncua_server.py PORT CERT.der KEY.pem
Endpoints: None and Basic256Sha256 SignAndEncrypt; users: anonymous and `pdtf` with the
password in $PDTF_CI_OPCUA_PW. Namespace `urn:pdtf:ci:asyncua`, folder Line1 with Temp
(Double, a new value every 200 ms, every 10th one UncertainSensorNotAccurate), Running
(Boolean), Batch (String) and Spectrum (Double[16]).
"""

import asyncio
import os
import sys
from datetime import datetime, timezone

from asyncua import Server, ua
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from asyncua.server.user_managers import UserManager


class Users(UserManager):
    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username is None and password is None:
            return User(role=UserRole.Anonymous)
        if username == "pdtf" and password == os.environ["PDTF_CI_OPCUA_PW"]:
            return User(role=UserRole.User)
        return None


async def main(port: int, cert: str, key: str) -> None:
    server = Server(user_manager=Users())
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_server_name("asyncua CI server")
    await server.set_application_uri("urn:pdtf:ci:asyncua-server")
    server.set_security_policy(
        [
            ua.SecurityPolicyType.NoSecurity,
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        ],
        permission_ruleset=SimpleRoleRuleset(),
    )
    server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
    await server.load_certificate(cert)
    await server.load_private_key(key)
    idx = await server.register_namespace("urn:pdtf:ci:asyncua")
    line = await server.nodes.objects.add_folder(ua.NodeId("Line1", idx), "Line1")

    async def var(name, value, vtype):
        return await line.add_variable(
            ua.NodeId(f"Line1.{name}", idx), name, ua.Variant(value, vtype)
        )

    temp = await var("Temp", 20.0, ua.VariantType.Double)
    running = await var("Running", True, ua.VariantType.Boolean)
    batch = await var("Batch", "CI-0001", ua.VariantType.String)
    spectrum = await var("Spectrum", [0.0] * 16, ua.VariantType.Double)

    async with server:
        print("asyncua server ready", flush=True)
        n = 0
        while True:
            await asyncio.sleep(0.2)
            n += 1
            code = (
                ua.StatusCodes.UncertainSensorNotAccurate if n % 10 == 0 else ua.StatusCodes.Good
            )
            await temp.write_value(
                ua.DataValue(
                    ua.Variant(20.0 + n / 10.0, ua.VariantType.Double),
                    StatusCode=ua.StatusCode(code),
                    SourceTimestamp=datetime.now(timezone.utc),
                )
            )
            if n % 5 == 0:
                await running.write_value(ua.Variant(n % 10 == 0, ua.VariantType.Boolean))
                await batch.write_value(ua.Variant(f"CI-{n:04d}", ua.VariantType.String))
                await spectrum.write_value(
                    ua.Variant([n + i / 100.0 for i in range(16)], ua.VariantType.Double)
                )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
