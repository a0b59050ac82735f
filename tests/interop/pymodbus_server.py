"""A third-party Modbus device for the interop run: pymodbus (pinned in .ci/run).

Usage: pymodbus_server.py tcp PORT | rtu SERIAL_PATH

Unit 1 holds, from protocol address 0 (pymodbus adds 1 internally, hence blocks at 1):
  holding 0: u16 54321      holding 1-2: f32 21.5 (big-endian words)
  holding 3-4: i32 -70000, words swapped (CDAB)   holding 5: bit 2 set (0x0004)
  input 0: i16 -655         coil 0: on            discrete input 0: on
Unit 2 (RTU only) holds holding 0: u16 222. The values never change: the check compares.
"""
import asyncio
import struct
import sys

from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
)
from pymodbus.framer import FramerType
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer


def words(fmt, value):
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def unit_one():
    i32 = words("i", -70000)
    holding = [54321] + words("f", 21.5) + [i32[1], i32[0]] + [0x0004] + [0] * 10
    return ModbusSlaveContext(
        hr=ModbusSequentialDataBlock(1, holding),
        ir=ModbusSequentialDataBlock(1, [(-655) & 0xFFFF] + [0] * 10),
        co=ModbusSequentialDataBlock(1, [True] + [False] * 15),
        di=ModbusSequentialDataBlock(1, [True] + [False] * 15),
    )


def unit_two():
    return ModbusSlaveContext(hr=ModbusSequentialDataBlock(1, [222] + [0] * 10))


async def main():
    kind, where = sys.argv[1], sys.argv[2]
    if kind == "tcp":
        context = ModbusServerContext(slaves={1: unit_one()}, single=False)
        print("pymodbus server ready", flush=True)
        await StartAsyncTcpServer(context=context, address=("127.0.0.1", int(where)))
    else:
        context = ModbusServerContext(slaves={1: unit_one(), 2: unit_two()}, single=False)
        print("pymodbus server ready", flush=True)
        await StartAsyncSerialServer(
            context=context, port=where, framer=FramerType.RTU, baudrate=19200
        )


asyncio.run(main())
